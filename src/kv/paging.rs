//! Page-by-page encoding of a whole KV cache under a [`KvProfile`].
//!
//! Each (layer, role, KV head) is a stream of `tokens` rows. A stream is kept
//! [`EncodedStream::Raw`] (bit-exact `f32`) when its role is not compressed by
//! the profile, or its layer or head is protected. Otherwise it is cut into
//! pages of `tokens_per_page` rows; inside a page, rows in the protected
//! first/last token windows are stored raw (`f32`, in token order) and the
//! other rows are encoded by the codec (in token order). Which rows are raw is
//! a pure function of (page start, page length, tokens, protected windows), so
//! it is not stored. If a page cannot be encoded (non-finite values, a norm
//! above fp16 range), the fallback policy either stores the whole page raw
//! with the reason, or fails with the stream and page named.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::axis::{AxisPolicy, ChannelMap};
use super::codec::{KvCodec, VqCodec};
use super::profile::{FallbackPolicy, KvProfile};
use super::tensor::{KvData, LayerKv, Matrix};

/// One page of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPage {
    /// First token.
    pub start: usize,
    /// Tokens in the page.
    pub len: usize,
    /// `Some(reason)` when the whole page fell back to raw storage.
    pub fallback: Option<String>,
    /// Raw rows (protected rows, or all rows on fallback), token order.
    pub raw: Vec<f32>,
    /// Codec bytes of the remaining rows, token order.
    pub coded: Vec<u8>,
}

/// One (layer, role, head) stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodedStream {
    /// Stored as is.
    Raw(Matrix),
    /// Paged and encoded.
    Paged {
        /// Tokens in the stream.
        tokens: usize,
        /// Pages in order.
        pages: Vec<EncodedPage>,
    },
}

/// One encoded layer: streams per KV head.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedLayer {
    /// Key streams.
    pub keys: Vec<EncodedStream>,
    /// Value streams.
    pub values: Vec<EncodedStream>,
}

/// An encoded KV cache.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedKv {
    /// Head dimension.
    pub head_dim: usize,
    /// Tokens per stream.
    pub tokens: usize,
    /// Layers.
    pub layers: Vec<EncodedLayer>,
}

/// Storage accounting. Raw values are counted at 16 bits (the cache's native
/// fp16), codec bytes at their size.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StorageStats {
    /// All values in the cache.
    pub values: u64,
    /// Rows stored by the codec.
    pub coded_rows: u64,
    /// Rows stored raw (protected, uncompressed role, or fallback).
    pub raw_rows: u64,
    /// Pages that fell back to raw.
    pub fallback_pages: u64,
    /// Codec bytes.
    pub coded_bytes: u64,
    /// `(8·coded_bytes + 16·raw_values) / values`.
    pub effective_bits_per_value: f64,
}

impl EncodedKv {
    /// Storage accounting over every stream.
    pub fn stats(&self) -> StorageStats {
        let d = self.head_dim as u64;
        let mut s = StorageStats::default();
        for layer in &self.layers {
            for stream in layer.keys.iter().chain(&layer.values) {
                s.values += self.tokens as u64 * d;
                match stream {
                    EncodedStream::Raw(m) => s.raw_rows += m.rows() as u64,
                    EncodedStream::Paged { pages, .. } => {
                        for p in pages {
                            let raw = p.raw.len() as u64 / d.max(1);
                            s.raw_rows += raw;
                            s.coded_rows += p.len as u64 - raw;
                            s.coded_bytes += p.coded.len() as u64;
                            s.fallback_pages += u64::from(p.fallback.is_some());
                        }
                    }
                }
            }
        }
        let bits = 8 * s.coded_bytes + 16 * s.raw_rows * d;
        s.effective_bits_per_value = if s.values == 0 {
            0.0
        } else {
            bits as f64 / s.values as f64
        };
        s
    }
}

/// A validated profile with its codec, ready to encode and decode caches.
#[derive(Debug, Clone)]
pub struct PagedCodec {
    profile: KvProfile,
    /// The profile's codec, then its tiers' ([`KvProfile::codecs`]).
    codecs: Vec<VqCodec>,
}

impl PagedCodec {
    /// Validates `profile` and builds its codec from the embedded codebook.
    pub fn new(profile: &KvProfile) -> Result<Self> {
        Ok(Self {
            codecs: profile.codecs()?,
            profile: profile.clone(),
        })
    }

    /// The profile's own codec (`codec`; with tiers, see [`Self::codec_of`]).
    pub fn codec(&self) -> &VqCodec {
        &self.codecs[0]
    }

    /// The codec of a stream, as the profile's allocation says.
    pub fn codec_of(&self, layer: usize, key: bool) -> &VqCodec {
        &self.codecs[self.profile.codec_of(layer, key)]
    }

    /// The profile.
    pub fn profile(&self) -> &KvProfile {
        &self.profile
    }

    fn check_dims(&self, kv: &KvData) -> Result<usize> {
        let d = kv.dims()?;
        let s = &self.profile.shape;
        if (d.layers, d.kv_heads, d.head_dim) != (s.layers, s.kv_heads, s.head_dim) {
            bail!(
                "KV has {} layers x {} KV heads x head_dim {}, profile expects {} x {} x {}",
                d.layers,
                d.kv_heads,
                d.head_dim,
                s.layers,
                s.kv_heads,
                s.head_dim
            );
        }
        Ok(d.tokens)
    }

    fn is_raw_stream(&self, layer: usize, head: usize, key: bool) -> bool {
        let role = self.profile.shape.role;
        let compressed = if key { role.keys() } else { role.values() };
        !compressed
            || self.profile.axis == AxisPolicy::Raw
            || self.profile.protected.stream(layer, head)
    }

    /// The per-channel map of a stream under the profile's axis policy, if any.
    pub fn channel_map(&self, layer: usize, head: usize, key: bool) -> Option<&ChannelMap> {
        self.profile.channels.as_ref()?.get(layer, head, key)
    }

    fn encode_page(
        &self,
        codec: &VqCodec,
        m: &Matrix,
        start: usize,
        len: usize,
        map: Option<&ChannelMap>,
    ) -> Result<EncodedPage> {
        let tokens = m.rows();
        let d = m.cols();
        let prot = &self.profile.protected;
        let mut raw = Vec::new();
        let mut coded_rows = Vec::new();
        for t in start..start + len {
            if prot.token(t, tokens) {
                raw.extend_from_slice(m.row(t));
            } else {
                coded_rows.extend_from_slice(m.row(t));
            }
        }
        let n = coded_rows.len() / d;
        if let Some(map) = map {
            map.forward(&mut coded_rows);
        }
        let coded = codec.encode(&Matrix::new(n, d, coded_rows)?);
        match (coded, self.profile.fallback) {
            (Ok(coded), _) => Ok(EncodedPage {
                start,
                len,
                fallback: None,
                raw,
                coded,
            }),
            (Err(e), FallbackPolicy::KeepRaw) => Ok(EncodedPage {
                start,
                len,
                fallback: Some(format!("{e:#}")),
                raw: m.data()[start * d..(start + len) * d].to_vec(),
                coded: Vec::new(),
            }),
            (Err(e), FallbackPolicy::Fail) => Err(e),
        }
    }

    fn encode_stream(&self, m: &Matrix, l: usize, h: usize, key: bool) -> Result<EncodedStream> {
        if self.is_raw_stream(l, h, key) {
            return Ok(EncodedStream::Raw(m.clone()));
        }
        let (codec, map) = (self.codec_of(l, key), self.channel_map(l, h, key));
        let tpp = self.profile.pages.tokens_per_page;
        let pages = (0..m.rows())
            .step_by(tpp)
            .enumerate()
            .map(|(i, start)| {
                self.encode_page(codec, m, start, tpp.min(m.rows() - start), map)
                    .with_context(|| format!("page {i}"))
            })
            .collect::<Result<_>>()?;
        Ok(EncodedStream::Paged {
            tokens: m.rows(),
            pages,
        })
    }

    /// Encodes layer `l` of a cache (heads as the profile's shape says).
    pub fn encode_layer(&self, l: usize, layer: &LayerKv) -> Result<EncodedLayer> {
        let enc = |ms: &[Matrix], key: bool| -> Result<Vec<EncodedStream>> {
            ms.par_iter()
                .enumerate()
                .map(|(h, m)| {
                    self.encode_stream(m, l, h, key).with_context(|| {
                        format!("layer {l} {} head {h}", if key { "key" } else { "value" })
                    })
                })
                .collect()
        };
        Ok(EncodedLayer {
            keys: enc(&layer.keys, true)?,
            values: enc(&layer.values, false)?,
        })
    }

    /// Decodes layer `l` of a cache of `tokens` tokens.
    pub fn decode_layer(&self, l: usize, layer: &EncodedLayer, tokens: usize) -> Result<LayerKv> {
        let dec = |ss: &[EncodedStream], key: bool| -> Result<Vec<Matrix>> {
            ss.par_iter()
                .enumerate()
                .map(|(h, s)| self.decode_stream(s, tokens, l, h, key))
                .collect::<Result<_>>()
                .with_context(|| format!("layer {l}"))
        };
        Ok(LayerKv {
            keys: dec(&layer.keys, true)?,
            values: dec(&layer.values, false)?,
        })
    }

    /// Encodes a whole cache (shape must match the profile; any token count).
    pub fn encode_kv(&self, kv: &KvData) -> Result<EncodedKv> {
        let tokens = self.check_dims(kv)?;
        let layers = kv
            .layers
            .par_iter()
            .enumerate()
            .map(|(l, layer)| self.encode_layer(l, layer))
            .collect::<Result<_>>()?;
        Ok(EncodedKv {
            head_dim: self.profile.shape.head_dim,
            tokens,
            layers,
        })
    }

    /// Decodes one page (random access) of the stream of layer `l`, KV head `h`, keys or
    /// values: `[page.len x head_dim]`.
    pub fn decode_page(
        &self,
        page: &EncodedPage,
        tokens: usize,
        l: usize,
        h: usize,
        key: bool,
    ) -> Result<Matrix> {
        let d = self.profile.shape.head_dim;
        if page.start + page.len > tokens {
            bail!(
                "page {}..{} exceeds {tokens} tokens",
                page.start,
                page.start + page.len
            );
        }
        if page.fallback.is_some() {
            return Matrix::new(page.len, d, page.raw.clone()).context("fallback page");
        }
        let prot = &self.profile.protected;
        let n_raw = (page.start..page.start + page.len)
            .filter(|&t| prot.token(t, tokens))
            .count();
        if page.raw.len() != n_raw * d {
            bail!(
                "page at {} has {} raw values, expected {}",
                page.start,
                page.raw.len(),
                n_raw * d
            );
        }
        let mut decoded = self
            .codec_of(l, key)
            .decode(&page.coded, page.len - n_raw)?;
        if let Some(map) = self.channel_map(l, h, key) {
            map.inverse(decoded.data_mut());
        }
        let mut out = Vec::with_capacity(page.len * d);
        let (mut ri, mut ci) = (0, 0);
        for t in page.start..page.start + page.len {
            if prot.token(t, tokens) {
                out.extend_from_slice(&page.raw[ri * d..(ri + 1) * d]);
                ri += 1;
            } else {
                out.extend_from_slice(decoded.row(ci));
                ci += 1;
            }
        }
        Matrix::new(page.len, d, out)
    }

    fn decode_stream(
        &self,
        s: &EncodedStream,
        tokens: usize,
        l: usize,
        h: usize,
        key: bool,
    ) -> Result<Matrix> {
        match s {
            EncodedStream::Raw(m) => Ok(m.clone()),
            EncodedStream::Paged { tokens: t, pages } => {
                if *t != tokens {
                    bail!("stream has {t} tokens, cache has {tokens}");
                }
                let d = self.profile.shape.head_dim;
                let mut out = Vec::with_capacity(tokens * d);
                let mut next = 0;
                for p in pages {
                    if p.start != next {
                        bail!("pages are not contiguous at token {next}");
                    }
                    out.extend_from_slice(self.decode_page(p, tokens, l, h, key)?.data());
                    next += p.len;
                }
                if next != tokens {
                    bail!("pages cover {next} of {tokens} tokens");
                }
                Matrix::new(tokens, d, out)
            }
        }
    }

    /// Decodes a whole cache.
    pub fn decode_kv(&self, enc: &EncodedKv) -> Result<KvData> {
        if enc.head_dim != self.profile.shape.head_dim {
            bail!(
                "encoded head_dim {} does not match profile {}",
                enc.head_dim,
                self.profile.shape.head_dim
            );
        }
        let layers = enc
            .layers
            .par_iter()
            .enumerate()
            .map(|(l, layer)| self.decode_layer(l, layer, enc.tokens))
            .collect::<Result<_>>()?;
        Ok(KvData { layers })
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::{build_profile, KvShape, ProfileSpec, RopeState};
    use super::super::synth::{synth_kv, SynthConfig};
    use super::super::tensor::KvRole;
    use super::*;

    fn setup(role: KvRole) -> (ProfileSpec, KvData) {
        let mut spec = ProfileSpec::new(KvShape {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 32,
            tokens: 100,
            role,
            rope: RopeState::PostRope,
            rope_theta: None,
        });
        spec.codec.codebook_size = 16;
        spec.codec.lloyd_iterations = Some(3);
        spec.codec.training_blocks = Some(4096);
        spec.pages.tokens_per_page = 32;
        let cfg = SynthConfig {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 32,
            tokens: 100,
            n_queries: 4,
            ..SynthConfig::default()
        };
        (spec, synth_kv(&cfg).unwrap().0)
    }

    #[test]
    fn protected_regions_are_bit_exact() {
        let (mut spec, kv) = setup(KvRole::Both);
        spec.protected.first_tokens = 4;
        spec.protected.last_tokens = 40; // spans two pages
        spec.protected.layers = vec![1];
        spec.protected.heads = vec![0];
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let enc = pc.encode_kv(&kv).unwrap();
        let dec = pc.decode_kv(&enc).unwrap();
        for l in 0..2 {
            for h in 0..2 {
                let (a, b) = (&kv.layers[l].keys[h], &dec.layers[l].keys[h]);
                let whole = l == 1 || h == 0;
                for t in 0..100 {
                    let protected = whole || !(4..60).contains(&t);
                    let same = a
                        .row(t)
                        .iter()
                        .zip(b.row(t))
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert_eq!(same, protected, "layer {l} head {h} token {t}");
                }
            }
        }
        let st = enc.stats();
        // Only layer 0 head 1 (keys and values) is coded: 56 rows each.
        assert_eq!(st.coded_rows, 2 * 56);
        assert_eq!(st.raw_rows, 8 * 100 - 2 * 56);
        assert_eq!(st.fallback_pages, 0);
        assert!(st.effective_bits_per_value < 16.0);
    }

    #[test]
    fn each_stream_uses_its_allocated_codec() {
        use super::super::profile::Allocation;
        let (mut spec, kv) = setup(KvRole::Both);
        let one = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let mut wide = spec.codec.clone();
        wide.codebook_size *= 4;
        spec.tiers = vec![wide];
        spec.allocation = Some(Allocation {
            keys: vec![1, 0],
            values: vec![0, 0],
        });
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let (a, b) = (one.encode_kv(&kv).unwrap(), pc.encode_kv(&kv).unwrap());
        // Layer 0's keys use two more bits per block; every other stream is the same size.
        let extra = b.stats().coded_bytes - a.stats().coded_bytes;
        assert!(extra > 0);
        assert_eq!(b.layers[1], a.layers[1]);
        let err = |dec: &KvData| -> f32 {
            let (x, y) = (kv.layers[0].keys[0].data(), dec.layers[0].keys[0].data());
            x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum()
        };
        assert!(err(&pc.decode_kv(&b).unwrap()) < err(&one.decode_kv(&a).unwrap()));
    }

    #[test]
    fn role_key_keeps_values_raw_and_pages_decode_alone() {
        let (spec, kv) = setup(KvRole::Key);
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let enc = pc.encode_kv(&kv).unwrap();
        assert!(matches!(enc.layers[0].values[0], EncodedStream::Raw(_)));
        let EncodedStream::Paged { pages, tokens } = &enc.layers[0].keys[1] else {
            panic!("keys must be paged");
        };
        assert_eq!(pages.len(), 4); // 32 + 32 + 32 + 4
        let full = pc.decode_kv(&enc).unwrap();
        let p2 = pc.decode_page(&pages[2], *tokens, 0, 1, true).unwrap();
        assert_eq!(p2, full.layers[0].keys[1].slice_rows(64, 96).unwrap());
        let cos: f32 = {
            let (a, b) = (kv.layers[0].keys[1].row(70), p2.row(6));
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
                * b.iter().map(|x| x * x).sum::<f32>().sqrt())
        };
        assert!(cos > 0.6, "{cos}"); // 1.5 bits per value
    }

    #[test]
    fn fallback_policies() {
        let (mut spec, mut kv) = setup(KvRole::Both);
        kv.layers[0].keys[0].data_mut()[40 * 32] = 1e6; // norm above fp16, page 1
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let enc = pc.encode_kv(&kv).unwrap();
        assert_eq!(enc.stats().fallback_pages, 1);
        let dec = pc.decode_kv(&enc).unwrap();
        assert_eq!(dec.layers[0].keys[0].row(40)[0], 1e6);
        spec.fallback = FallbackPolicy::Fail;
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let err = format!("{:#}", pc.encode_kv(&kv).unwrap_err());
        assert!(
            err.contains("layer 0 key head 0") && err.contains("page 1"),
            "{err}"
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let (spec, kv) = setup(KvRole::Both);
        let pc = PagedCodec::new(&build_profile(&spec, None).unwrap()).unwrap();
        let mut short = kv.clone();
        short.layers.pop();
        assert!(pc.encode_kv(&short).is_err());
        let mut enc = pc.encode_kv(&kv).unwrap();
        if let EncodedStream::Paged { pages, .. } = &mut enc.layers[0].keys[1] {
            pages[0].coded.pop();
        }
        assert!(pc.decode_kv(&enc).is_err());
    }
}

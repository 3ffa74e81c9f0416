//! `kv-profile build` and `verify`: a FibQuant KV-cache profile built from a shape (and
//! optional calibration KV) and written as JSON; a profile measured on evaluation KV
//! (synthetic when absent), optionally next to baselines, with a receipt. `verify` fails
//! over budget ([`OverBudget`], exit 3) and on invalid or tampered input (exit 2).

use super::axis::AxisPolicy;
use super::baselines::choice;
use super::capture::{CacheHook, ModelText, Perplexity, Runner};
use super::io::{parse_shape, read_kv, read_queries, shape_from_model};
use super::paging::PagedCodec;
use super::profile::build_profile_with;
use super::profile::{
    Allocation, CodecKind, FallbackPolicy, ProtectedRegions, QualityBudget, RopeState,
};
use super::receipt::PerplexityReport;
use super::receipt::{compare_kv, keep_recent, round_trip_kv};
use super::synth::{synth_kv, SynthConfig};
use super::{evaluate, KvProfile, KvRole, KvShape, ProfileSpec, Receipt, Verdict};
use super::{KvData, LayerKv};
use crate::error::OverBudget;
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};

/// Where the KV dimensions come from.
#[derive(Debug, Clone, Copy)]
pub enum ShapeFrom<'a> {
    /// `layers=L,kv_heads=H,query_heads=Q,head_dim=D,tokens=T` ([`parse_shape`]).
    Spec(&'a str),
    /// A GGUF file or a config.json ([`shape_from_model`]).
    Model(&'a Path),
}

/// What `kv-profile build` builds.
#[derive(Debug, Clone)]
pub struct BuildJob<'a> {
    /// Dimensions.
    pub shape: ShapeFrom<'a>,
    /// Which of keys and values are compressed.
    pub role: KvRole,
    /// Whether keys are captured before or after RoPE.
    pub rope: RopeState,
    /// Codec family.
    pub codec: CodecKind,
    /// Codebook seed.
    pub seed: u64,
    /// Vector dimension of a FibQuant block (TurboQuant uses 1).
    pub block_dim: usize,
    /// Codebook size; `2^bits` when `None`, 256 without bits either.
    pub codebook_size: Option<usize>,
    /// Bits per block index (1..16), when no codebook size is given.
    pub bits: Option<u32>,
    /// Tokens per page.
    pub tokens_per_page: usize,
    /// Tokens, layers and heads kept raw.
    pub protected: ProtectedRegions,
    /// What happens to a block the codec cannot encode.
    pub fallback: FallbackPolicy,
    /// Quality budget `verify` checks.
    pub budget: QualityBudget,
    /// Calibration KV (safetensors) to train the codebook on.
    pub calibration: Option<&'a Path>,
    /// Profile JSON to write.
    pub output: &'a Path,
    /// Axis policy.
    pub axis: AxisPolicy,
    /// Store unbiased norms ([`super::codec::VqCodec::set_unbiased`]).
    pub unbiased_norm: bool,
    /// Learn the channel maps in their own bases ([`super::axis::ChannelMap::learn_basis`]).
    pub channel_basis: bool,
    /// Bits per row norm (16 or 8, [`super::codec::NormCode`]).
    pub norm_bits: u32,
    /// Extra codecs as `BLOCK_DIMxBITS` ([`parse_tier`]), same family, seed and norms.
    pub tiers: &'a [String],
    /// Codec of each layer's keys (one entry: every layer); empty: codec 0.
    pub key_codecs: &'a [usize],
    /// Codec of each layer's values (one entry: every layer); empty: codec 0.
    pub value_codecs: &'a [usize],
}

/// `BLOCK_DIMxBITS` (e.g. `2x12`) as (block dim, index bits).
pub fn parse_tier(s: &str) -> Result<(usize, u32)> {
    let parsed = s
        .split_once(['x', 'X'])
        .and_then(|(k, b)| Some((k.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some((k, b)) if (1..=16).contains(&b) => Ok((k, b)),
        _ => bail_invalid!("--tier {s:?}: expected BLOCK_DIMxBITS with BITS in 1..16, e.g. 2x12"),
    }
}

/// One codec index per layer from a command-line list (empty: 0; one entry: every layer).
fn per_layer(name: &str, list: &[usize], layers: usize) -> Result<Vec<usize>> {
    match list.len() {
        0 => Ok(vec![0; layers]),
        1 => Ok(vec![list[0]; layers]),
        n if n == layers => Ok(list.to_vec()),
        n => bail_invalid!("--{name}: {n} entries, the model has {layers} layers (give one per layer, or one for all)"),
    }
}

/// A built (and written) profile.
#[derive(Debug)]
pub struct Built {
    /// Where it was written.
    pub output: PathBuf,
    /// The profile.
    pub profile: KvProfile,
}

/// What `kv-profile verify` checks.
#[derive(Debug, Clone, Copy)]
pub struct VerifyJob<'a> {
    /// Profile JSON files (at least one), measured on the same evaluation KV and model run.
    pub profiles: &'a [PathBuf],
    /// Evaluation KV (needs `queries`); synthetic KV when `None`.
    pub eval: Option<&'a Path>,
    /// Queries of the evaluation KV.
    pub queries: Option<&'a Path>,
    /// Run a model on a text instead (KV, queries and perplexity).
    pub model: Option<ModelText<'a>>,
    /// Chunks of `model.tokens` tokens the perplexity is scored on (llama-perplexity's
    /// `--chunks`); the attention metrics use the first.
    pub chunks: usize,
    /// Also measure the baselines at the (first) profile's bits.
    pub compare: bool,
    /// Receipt JSON (with several profiles, the [`RECEIPTS_SCHEMA`] document) to write.
    pub output: Option<&'a Path>,
}

/// A model loaded for `verify --model`, its chunks of tokens and the fp16-cache perplexity.
struct ModelRun {
    runner: Runner,
    chunks: Vec<Vec<u32>>,
    fp16: Perplexity,
}

impl ModelRun {
    /// The model on `text`: `first` (already run, with its fp16 perplexity) and the next
    /// `chunks − 1` chunks of as many tokens, run with the fp16 cache.
    fn new(
        runner: Runner,
        first: Vec<u32>,
        fp16: Perplexity,
        m: &ModelText,
        chunks: usize,
    ) -> Result<ModelRun> {
        if chunks == 0 {
            bail_invalid!("--chunks must be at least 1");
        }
        let n = first.len();
        let all = if chunks > 1 {
            let total = n
                .checked_mul(chunks)
                .ok_or_else(|| invalid!("--tokens × --chunks overflows"))?;
            runner.tokens(m.text, total)?
        } else {
            first.clone()
        };
        let mut run = ModelRun {
            runner,
            chunks: all.chunks_exact(n).map(<[u32]>::to_vec).collect(),
            fp16,
        };
        if chunks > 1 {
            let rest = run.score(1, 0, |_, kv| Ok(kv))?;
            run.fp16 = Perplexity::combine(&[run.fp16.clone(), rest]);
        }
        Ok(run)
    }

    /// Perplexity over the chunks from `from` on, every layer's cache put through `f` as
    /// the model runs (each chunk a fresh sequence), with a recent window of `window`
    /// fp16 tokens ([`CacheHook`]).
    fn score(
        &self,
        from: usize,
        window: usize,
        mut f: impl FnMut(usize, LayerKv) -> Result<LayerKv>,
    ) -> Result<Perplexity> {
        let vocab = self.runner.model.config.vocab;
        let mut parts = Vec::new();
        for tokens in &self.chunks[from..] {
            let logits = self
                .runner
                .model
                .forward(tokens, &mut CacheHook::new(&mut f, window))?;
            parts.push(Perplexity::of(&logits, tokens, vocab));
        }
        Ok(Perplexity::combine(&parts))
    }

    /// Perplexity with every layer's cache put through `f` as the model runs, with a
    /// recent window of `window` fp16 tokens.
    fn perplexity(
        &self,
        window: usize,
        f: impl FnMut(usize, LayerKv) -> Result<LayerKv>,
    ) -> Result<PerplexityReport> {
        let p = self.score(0, window, f)?;
        Ok(PerplexityReport {
            tokens: self.chunks.iter().map(Vec::len).sum(),
            scored: p.scored,
            fp16: self.fp16.perplexity,
            compressed: p.perplexity,
            delta: p.perplexity - self.fp16.perplexity,
            noise: self.fp16.delta_noise(&p),
        })
    }
}

/// Schema of the document `verify` prints for several profiles: their receipts in order.
pub const RECEIPTS_SCHEMA: &str = "qforge.kv-receipts/1";

/// A verified profile: the receipt and its document.
#[derive(Debug)]
pub struct Verified {
    /// The profile's path.
    pub profile: PathBuf,
    /// The receipt.
    pub receipt: Receipt,
    /// `synthetic` or the evaluation KV's path.
    pub source: String,
    /// The receipt with `eval_source` (and `baselines` under `compare`).
    pub document: Json,
}

/// The profiles `verify` measured and the document printed (and written): one profile's
/// receipt, or for several a [`RECEIPTS_SCHEMA`] document with their receipts in order.
#[derive(Debug)]
pub struct VerifyReport {
    /// One per profile, in the order given.
    pub verified: Vec<Verified>,
    /// The document.
    pub document: Json,
}

/// Builds the profile `args` asks for and writes it (atomically) to `args.output`.
pub fn build(args: &BuildJob) -> Result<Built> {
    let ([layers, kv_heads, query_heads, head_dim, tokens], rope_theta) = match args.shape {
        ShapeFrom::Spec(s) => (parse_shape(s)?, None),
        ShapeFrom::Model(p) => shape_from_model(p)?,
    };
    let shape = KvShape {
        layers,
        kv_heads,
        query_heads,
        head_dim,
        tokens,
        role: args.role,
        rope: args.rope,
        rope_theta,
    };
    let mut spec = ProfileSpec::new(shape);
    spec.codec.kind = args.codec;
    spec.codec.seed = args.seed;
    spec.codec.unbiased_norm = args.unbiased_norm;
    if args.norm_bits != 16 && args.norm_bits != 8 {
        bail_invalid!("--norm-bits must be 16 or 8, got {}", args.norm_bits);
    }
    spec.codec.norm_bits = args.norm_bits;
    spec.codec.block_dim = if args.codec == CodecKind::Turboquant {
        1
    } else {
        args.block_dim
    };
    spec.codec.codebook_size = match (args.codebook_size, args.bits) {
        (Some(n), _) => n,
        (None, Some(b)) if (1..=16).contains(&b) => 1 << b,
        (None, Some(b)) => bail_invalid!("--bits {b} is outside 1..16"),
        (None, None) => 256,
    };
    spec.pages.tokens_per_page = args.tokens_per_page;
    spec.protected = args.protected.clone();
    spec.fallback = args.fallback;
    spec.budget = args.budget.clone();
    spec.axis = args.axis;
    spec.channel_basis = args.channel_basis;
    if args.channel_basis && args.axis.channels() == (false, false) {
        bail_invalid!(
            "--channel-basis needs an axis policy with channel maps (per-channel, role-aware)"
        );
    }
    if args.tiers.is_empty() {
        if !args.key_codecs.is_empty() || !args.value_codecs.is_empty() {
            bail_invalid!(
                "--key-codecs and --value-codecs choose among --tier codecs; give --tier"
            );
        }
    } else {
        for t in args.tiers {
            let (block_dim, bits) = parse_tier(t)?;
            let mut c = spec.codec.clone();
            c.block_dim = block_dim;
            c.codebook_size = 1 << bits;
            spec.tiers.push(c);
        }
        spec.allocation = Some(Allocation {
            keys: per_layer("key-codecs", args.key_codecs, layers)?,
            values: per_layer("value-codecs", args.value_codecs, layers)?,
        });
    }
    let calibration = args
        .calibration
        .map(|p| read_kv(p, Some(head_dim)))
        .transpose()?;
    // Key channel maps are weighted by the calibration file's queries.
    let queries = match (args.calibration, &calibration) {
        (Some(p), Some(kv)) if args.axis.channels().0 => {
            Some(read_queries(p, kv.layers.len(), Some(head_dim))?)
        }
        _ => None,
    };
    let profile = build_profile_with(&spec, calibration.as_ref(), queries.as_ref())
        .map_err(|e| invalid!("{e:#}"))?;
    let text = profile.to_json()? + "\n";
    crate::formats::atomic::write_file(args.output, text.as_bytes())?;
    Ok(Built {
        output: args.output.to_path_buf(),
        profile,
    })
}

impl Built {
    /// The `kv-profile build --json` document (`qforge.kv-build/1`).
    pub fn summary(&self) -> Json {
        let profile = &self.profile;
        json!({
            "schema": "qforge.kv-build/1",
            "output": self.output.display().to_string(),
            "codec": profile.codec_name(),
            "bits_per_value": profile.bits_per_value(),
            "profile_sha256": profile.digests.profile,
            "codebook_sha256": profile.digests.codebook,
            "calibration_digest": profile.calibration_digest,
        })
    }

    /// The one-line text report.
    pub fn render_text(&self) -> String {
        let profile = &self.profile;
        format!(
            "wrote {}: {} at {:.3} bits per value, profile sha256 {}\n",
            self.output.display(),
            profile.codec_name(),
            profile.bits_per_value(),
            profile.digests.profile
        )
    }
}

/// Reads and validates a profile (invalid input, exit 2, when it cannot).
fn load_profile(path: &Path) -> Result<KvProfile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid!("cannot read {}: {e}", path.display()))?;
    KvProfile::from_json(&text)
        .map_err(|e| invalid!("{}: {}", path.display(), crate::error::one_line(&e)))
}

/// The evaluation data of `args`: KV, queries, their source and, for `--model`, the model
/// run with its fp16 perplexity. Synthetic KV takes the shape and seed of `profile`.
fn evaluation(
    args: &VerifyJob,
    profile: &KvProfile,
) -> Result<(KvData, super::Queries, String, Option<ModelRun>)> {
    let s = &profile.shape;
    Ok(match (args.eval, args.queries, args.model) {
        (_, _, Some(m)) => {
            let r = m.run()?;
            let run = ModelRun::new(r.runner, r.tokens, r.perplexity, &m, args.chunks)?;
            (r.hook.kv, r.hook.q, m.text.display().to_string(), Some(run))
        }
        (Some(e), Some(q), None) => {
            let kv = read_kv(e, Some(s.head_dim))?;
            let queries = read_queries(q, kv.layers.len(), Some(s.head_dim))?;
            (kv, queries, e.display().to_string(), None)
        }
        (Some(_), None, None) => bail_invalid!("--eval needs --queries"),
        _ => {
            let cfg = SynthConfig {
                layers: s.layers,
                kv_heads: s.kv_heads,
                query_heads: s.query_heads,
                head_dim: s.head_dim,
                tokens: s.tokens.min(1024),
                seed: profile.codec.seed,
                ..SynthConfig::default()
            };
            let (kv, q) = synth_kv(&cfg).map_err(|e| invalid!("{e:#}"))?;
            (kv, q, "synthetic".to_string(), None)
        }
    })
}

/// Verifies the profiles of `args` on one evaluation (the evaluation KV, synthetic KV of
/// the first profile's shape without one, or one run of `--model` whose fp16 pass serves
/// every profile) and writes the document to `args.output` when given. `--compare`
/// measures the baselines next to the first profile.
pub fn verify(args: &VerifyJob) -> Result<VerifyReport> {
    let profiles = args
        .profiles
        .iter()
        .map(|p| load_profile(p))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = profiles.first() else {
        bail_invalid!("give a profile to verify");
    };
    let (kv, queries, source, run) = evaluation(args, first)?;
    let several = profiles.len() > 1;
    let mut verified = Vec::new();
    for (i, (path, profile)) in args.profiles.iter().zip(profiles).enumerate() {
        let compare = args.compare && i == 0;
        let measured = measure(&profile, (&kv, &queries, &source), run.as_ref(), compare);
        // With several profiles, an error names the one it is about.
        let (receipt, document) = match measured {
            Err(e) if several => return Err(e.context(path.display().to_string())),
            m => m?,
        };
        verified.push(Verified {
            profile: path.clone(),
            receipt,
            source: source.clone(),
            document,
        });
    }
    let document = match &verified[..] {
        [one] => one.document.clone(),
        all => json!({
            "schema": RECEIPTS_SCHEMA,
            "receipts": all.iter().map(|v| v.document.clone()).collect::<Vec<_>>(),
        }),
    };
    let text = serde_json::to_string_pretty(&document)? + "\n";
    if let Some(out) = args.output {
        crate::formats::atomic::write_file(out, text.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(VerifyReport { verified, document })
}

/// One profile's receipt on the evaluation KV and queries (with the perplexity of `run`)
/// and its document: the receipt with `eval_source` (the evaluation's source) and, under
/// `compare`, the baselines of [`choice::for_profile`].
fn measure(
    profile: &KvProfile,
    (kv, queries, source): (&KvData, &super::Queries, &str),
    run: Option<&ModelRun>,
    compare: bool,
) -> Result<(Receipt, Json)> {
    let s = &profile.shape;
    let mut receipt = evaluate(profile, kv, queries).map_err(|e| invalid!("{e:#}"))?;
    let window = profile.protected.last_tokens;
    let tokens = kv.dims()?.tokens.max(1);
    if let Some(run) = run {
        let pc = PagedCodec::new(profile)?;
        let t = run.chunks[0].len();
        let p = run.perplexity(window, |l, layer| {
            pc.decode_layer(l, &pc.encode_layer(l, &layer)?, t)
        })?;
        receipt.add_perplexity(p, &profile.budget);
    }
    let mut doc = serde_json::to_value(&receipt)?;
    doc["eval_source"] = json!(source);
    if compare {
        let mut rows = Vec::new();
        let key_order = run.map(|r| r.runner.model.config.llama_cpp_key_order.as_slice());
        for (name, kc, vc) in choice::for_profile(profile, key_order)? {
            let (k, v) = (
                s.role.keys().then_some(kc.as_ref()),
                s.role.values().then_some(vc.as_ref()),
            );
            // The profile's recent window applies to the baselines too, charged at 16 bits.
            let mut recon = round_trip_kv(kv, k, v)?;
            keep_recent(kv, &mut recon, window);
            let (m, _) = compare_kv(kv, &recon, queries, profile.budget.top_k)?;
            let bits = choice::pair_bits(s.role, kc.as_ref(), vc.as_ref());
            let w = window.min(tokens) as f64;
            let effective = (16.0 * w + bits * (tokens as f64 - w)) / tokens as f64;
            let mut row = json!({
                "codec": name,
                "bits_per_value": bits,
                "effective_bits_per_value": effective,
                "metrics": m,
            });
            if let Some(run) = run {
                let p = run.perplexity(window, |_, layer| {
                    let one = KvData {
                        layers: vec![layer],
                    };
                    let mut rt = round_trip_kv(&one, k, v)?;
                    Ok(rt.layers.remove(0))
                })?;
                row["perplexity"] = serde_json::to_value(p)?;
            }
            rows.push(row);
        }
        doc["baselines"] = Json::Array(rows);
    }
    Ok((receipt, doc))
}

impl VerifyReport {
    /// The text report: one block per profile.
    pub fn render_text(&self) -> String {
        self.verified.iter().map(Verified::render_text).collect()
    }

    /// Over budget (exit 3) when some profile's verdict is a failure, naming the failed
    /// checks (and, with several profiles, the profile).
    pub fn check_budget(&self) -> Result<()> {
        let several = self.verified.len() > 1;
        let failed: Vec<String> = self
            .verified
            .iter()
            .filter_map(|v| {
                let checks = v.failed_checks()?;
                Some(if several {
                    format!("{}: {checks}", v.profile.display())
                } else {
                    checks
                })
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(anyhow::Error::new(OverBudget(format!(
            "over budget: {}",
            failed.join("; ")
        ))))
    }
}

impl Verified {
    /// The one-line text report.
    pub fn render_text(&self) -> String {
        let (receipt, source) = (&self.receipt, &self.source);
        let m = &receipt.metrics;
        format!(
            "{}: {} on {} KV, {:.3} bits per value ({:.2}x vs fp16): key-logit MSE {:.4e}, attention TV {:.4}, top-{} disagreement {:.4}, value-agg MSE {:.4e} -> {}\n",
            self.profile.display(),
            receipt.codec,
            source,
            receipt.storage.effective_bits_per_value,
            receipt.compression_ratio_vs_fp16,
            m.key_logit_mse,
            m.attention_tv,
            m.top_k,
            m.topk_disagreement,
            m.value_agg_mse,
            if receipt.verdict == Verdict::Pass { "PASS" } else { "OVER BUDGET" }
        ) + &match &receipt.perplexity {
            Some(p) => format!(
                "perplexity over {} tokens: {:.4} with the fp16 cache, {:.4} with the encoded cache ({:+.4} ± {:.4})\n",
                p.scored, p.fp16, p.compressed, p.delta, p.noise
            ),
            None => String::new(),
        }
    }

    /// The failed checks, `name value > max` joined by commas; `None` on a pass.
    fn failed_checks(&self) -> Option<String> {
        let receipt = &self.receipt;
        (receipt.verdict == Verdict::Fail).then(|| {
            receipt
                .checks
                .iter()
                .filter(|c| !c.pass)
                .map(|c| format!("{} {} > {}", c.name, c.value, c.max))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

//! Evaluation of a profile on evaluation KV + queries, producing a
//! [`Receipt`] (`qforge.kv-receipt/1`) with every metric, per-layer metrics,
//! storage accounting, pass/fail per budget item and an overall verdict.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::codec::KvCodec;
use super::digest::f32_stream_digest;
use super::metrics::{
    compression_ratio_vs_fp16, layer_sums, LayerPair, MetricSums, QualityMetrics,
};
use super::paging::{PagedCodec, StorageStats};
use super::profile::{KvProfile, QualityBudget};
use super::tensor::{KvData, LayerKv, Matrix, Queries};

/// Receipt schema identifier.
pub const RECEIPT_SCHEMA: &str = "qforge.kv-receipt/1";
/// Tag of the evaluation-data digest stream.
pub const EVAL_TAG: &str = "qforge.kv-eval/1";

/// Shape of the evaluation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalShape {
    /// Layers.
    pub layers: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Query heads.
    pub query_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Tokens per head.
    pub tokens: usize,
    /// Queries per query head.
    pub queries_per_head: usize,
}

/// One budget item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// Budget field, e.g. `max_attention_tv`.
    pub name: String,
    /// Measured value.
    pub value: f64,
    /// Limit.
    pub max: f64,
    /// `value <= max` (NaN fails).
    pub pass: bool,
}

/// Overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every budget item passed.
    Pass,
    /// At least one budget item failed.
    Fail,
}

/// Evaluation receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always [`RECEIPT_SCHEMA`].
    pub schema: String,
    /// `digests.profile` of the evaluated profile.
    pub profile_sha256: String,
    /// SHA-256 of the codebook bytes.
    pub codebook_sha256: String,
    /// [`eval_digest`] of the evaluation data.
    pub eval_sha256: String,
    /// Codec name.
    pub codec: String,
    /// Evaluation data shape.
    pub shape: EvalShape,
    /// Nominal codec bits per value.
    pub bits_per_value: f64,
    /// Storage accounting including raw (protected / fallback) rows.
    pub storage: StorageStats,
    /// `16 / storage.effective_bits_per_value`.
    pub compression_ratio_vs_fp16: f64,
    /// Metrics over all layers.
    pub metrics: QualityMetrics,
    /// Metrics per layer.
    pub per_layer: Vec<QualityMetrics>,
    /// Perplexity with the fp16 and the encoded cache (`verify --model`), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<PerplexityReport>,
    /// Budget items (only those set in the profile).
    pub checks: Vec<BudgetCheck>,
    /// Overall verdict.
    pub verdict: Verdict,
}

/// Perplexity of a model run on a text with its fp16 KV cache and with the cache encoded
/// and decoded as the model runs (every layer's keys and values, before attention reads
/// them), llama-perplexity's recipe (the second half of the tokens is scored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    /// Tokens run.
    pub tokens: usize,
    /// Tokens scored.
    pub scored: usize,
    /// Perplexity with the fp16 cache.
    pub fp16: f64,
    /// Perplexity with the encoded cache.
    pub compressed: f64,
    /// `compressed - fp16`.
    pub delta: f64,
    /// The delta's sampling noise: `fp16` times the standard error of the mean per-token
    /// increase of the negative log-likelihood ([`super::capture::Perplexity::delta_noise`]); absent in
    /// receipts written before it existed.
    #[serde(default)]
    pub noise: f64,
}

impl Receipt {
    /// Records the perplexity run and, when the budget bounds it, its check (the
    /// verdict is recomputed).
    pub fn add_perplexity(&mut self, p: PerplexityReport, budget: &QualityBudget) {
        if let Some(max) = budget.max_perplexity_delta {
            self.checks.push(BudgetCheck {
                name: "max_perplexity_delta".to_string(),
                value: p.delta,
                max,
                pass: p.delta <= max,
            });
        }
        self.perplexity = Some(p);
        self.verdict = if self.checks.iter().all(|c| c.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).context("serializing receipt")
    }
}

/// Digest of evaluation data: [`f32_stream_digest`] with tag `qforge.kv-eval/1`,
/// dims `[layers, kv_heads, tokens, head_dim, query_heads, queries_per_head]`, then
/// for each layer its key heads then value heads, then for each layer its query heads.
pub fn eval_digest(kv: &KvData, queries: &Queries) -> Result<String> {
    let shape = eval_shape(kv, queries)?;
    let dims = [
        shape.layers,
        shape.kv_heads,
        shape.tokens,
        shape.head_dim,
        shape.query_heads,
        shape.queries_per_head,
    ]
    .map(|v| v as u64);
    let kv_chunks = kv
        .layers
        .iter()
        .flat_map(|l| l.keys.iter().chain(&l.values))
        .map(Matrix::data);
    let q_chunks = queries.layers.iter().flatten().map(Matrix::data);
    Ok(f32_stream_digest(
        EVAL_TAG,
        &dims,
        kv_chunks.chain(q_chunks),
    ))
}

/// Checks KV against queries and returns the combined shape.
pub fn eval_shape(kv: &KvData, queries: &Queries) -> Result<EvalShape> {
    let d = kv.dims()?;
    let query_heads = queries.layers.first().map_or(0, Vec::len);
    if query_heads == 0 || !query_heads.is_multiple_of(d.kv_heads) {
        bail!(
            "query heads ({query_heads}) must be a positive multiple of KV heads ({})",
            d.kv_heads
        );
    }
    let n = queries.check(d.layers, query_heads, d.head_dim)?;
    if n == 0 || d.tokens == 0 {
        bail!("evaluation needs at least one token and one query per head (got {} tokens, {n} queries)", d.tokens);
    }
    Ok(EvalShape {
        layers: d.layers,
        kv_heads: d.kv_heads,
        query_heads,
        head_dim: d.head_dim,
        tokens: d.tokens,
        queries_per_head: n,
    })
}

/// Metrics of `recon` against `orig` under `queries`: (all layers, per layer).
pub fn compare_kv(
    orig: &KvData,
    recon: &KvData,
    queries: &Queries,
    top_k: usize,
) -> Result<(QualityMetrics, Vec<QualityMetrics>)> {
    eval_shape(orig, queries)?;
    if orig.dims()? != recon.dims()? {
        bail!("reconstructed KV shape differs from the original");
    }
    let per: Vec<MetricSums> = (0..orig.layers.len())
        .into_par_iter()
        .map(|l| {
            let (o, r) = (&orig.layers[l], &recon.layers[l]);
            let pair = LayerPair {
                keys: &o.keys,
                keys_hat: &r.keys,
                values: &o.values,
                values_hat: &r.values,
            };
            layer_sums(&queries.layers[l], pair, top_k).with_context(|| format!("layer {l}"))
        })
        .collect::<Result<_>>()?;
    let mut total = MetricSums::default();
    per.iter().for_each(|s| total.merge(s));
    Ok((
        total.finish(top_k),
        per.iter().map(|s| s.finish(top_k)).collect(),
    ))
}

/// Round-trips keys through `key_codec` and values through `value_codec`
/// (`None` keeps them exact), e.g. to compare baselines.
pub fn round_trip_kv(
    kv: &KvData,
    key_codec: Option<&dyn KvCodec>,
    value_codec: Option<&dyn KvCodec>,
) -> Result<KvData> {
    kv.dims()?;
    let rt = |ms: &[Matrix], c: Option<&dyn KvCodec>| -> Result<Vec<Matrix>> {
        ms.iter()
            .map(|m| c.map_or_else(|| Ok(m.clone()), |c| c.round_trip(m)))
            .collect()
    };
    let layers = kv
        .layers
        .par_iter()
        .map(|l| {
            Ok(LayerKv {
                keys: rt(&l.keys, key_codec)?,
                values: rt(&l.values, value_codec)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(KvData { layers })
}

/// Puts the last `window` rows of every stream of `recon` back to `orig`'s (a recent window
/// of fp16 tokens, as the profile's `protected.last_tokens` keeps them); a no-op for 0.
pub fn keep_recent(orig: &KvData, recon: &mut KvData, window: usize) {
    for (o, r) in orig.layers.iter().zip(&mut recon.layers) {
        for (om, rm) in o
            .keys
            .iter()
            .zip(&mut r.keys)
            .chain(o.values.iter().zip(&mut r.values))
        {
            let w = window.min(om.rows()) * om.cols();
            let n = om.data().len();
            rm.data_mut()[n - w..].copy_from_slice(&om.data()[n - w..]);
        }
    }
}

/// Budget items set in `budget`, checked against `m`, and the verdict.
pub fn check_budget(budget: &QualityBudget, m: &QualityMetrics) -> (Vec<BudgetCheck>, Verdict) {
    let items = [
        (
            "max_key_logit_mse",
            budget.max_key_logit_mse,
            m.key_logit_mse,
        ),
        ("max_attention_tv", budget.max_attention_tv, m.attention_tv),
        (
            "max_topk_disagreement",
            budget.max_topk_disagreement,
            m.topk_disagreement,
        ),
        (
            "max_value_agg_mse",
            budget.max_value_agg_mse,
            m.value_agg_mse,
        ),
    ];
    let checks: Vec<BudgetCheck> = items
        .into_iter()
        .filter_map(|(name, max, value)| {
            max.map(|max| BudgetCheck {
                name: name.to_string(),
                value,
                max,
                pass: value <= max,
            })
        })
        .collect();
    let verdict = if checks.iter().all(|c| c.pass) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    (checks, verdict)
}

/// Validates `profile`, encodes `kv` page by page, decodes it, and measures it
/// under `queries` against the profile's budget.
pub fn evaluate(profile: &KvProfile, kv: &KvData, queries: &Queries) -> Result<Receipt> {
    let pc = PagedCodec::new(profile)?;
    let shape = eval_shape(kv, queries)?;
    if shape.query_heads != profile.shape.query_heads {
        bail!(
            "evaluation has {} query heads, profile expects {}",
            shape.query_heads,
            profile.shape.query_heads
        );
    }
    let enc = pc.encode_kv(kv)?;
    let recon = pc.decode_kv(&enc)?;
    let top_k = profile.budget.top_k;
    let (metrics, per_layer) = compare_kv(kv, &recon, queries, top_k)?;
    let (checks, verdict) = check_budget(&profile.budget, &metrics);
    let storage = enc.stats();
    Ok(Receipt {
        schema: RECEIPT_SCHEMA.to_string(),
        profile_sha256: profile.digests.profile.clone(),
        codebook_sha256: profile.codebook.sha256.clone(),
        eval_sha256: eval_digest(kv, queries)?,
        codec: profile.codec_name(),
        shape,
        bits_per_value: profile.bits_per_value(),
        compression_ratio_vs_fp16: compression_ratio_vs_fp16(storage.effective_bits_per_value),
        storage,
        metrics,
        per_layer,
        perplexity: None,
        checks,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::super::profile::{build_profile, KvShape, ProfileSpec, RopeState};
    use super::super::synth::{synth_kv, SynthConfig};
    use super::super::tensor::KvRole;
    use super::*;

    fn data() -> (KvData, Queries) {
        synth_kv(&SynthConfig {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 64,
            tokens: 128,
            n_queries: 8,
            ..SynthConfig::default()
        })
        .unwrap()
    }

    fn spec() -> ProfileSpec {
        let mut s = ProfileSpec::new(KvShape {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 64,
            tokens: 128,
            role: KvRole::Both,
            rope: RopeState::PostRope,
            rope_theta: Some(10_000.0),
        });
        s.codec.codebook_size = 64;
        s.codec.lloyd_iterations = Some(5);
        s.codec.training_blocks = Some(8192);
        s.pages.tokens_per_page = 64;
        s
    }

    #[test]
    fn budget_verdicts() {
        let (kv, q) = data();
        let mut s = spec();
        s.budget.max_attention_tv = Some(0.5);
        s.budget.max_topk_disagreement = Some(1.0);
        let p = build_profile(&s, None).unwrap();
        let r = evaluate(&p, &kv, &q).unwrap();
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.checks);
        assert_eq!(r.checks.len(), 2);
        assert_eq!(r.per_layer.len(), 2);
        assert_eq!(r.profile_sha256, p.digests.profile);
        assert!(r.metrics.attention_tv > 0.0);
        s.budget.max_key_logit_mse = Some(1e-9);
        let p = build_profile(&s, None).unwrap();
        let r = evaluate(&p, &kv, &q).unwrap();
        assert_eq!(r.verdict, Verdict::Fail);
        let failed: Vec<_> = r
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, vec!["max_key_logit_mse"]);
        let json = r.to_json().unwrap();
        assert!(json.contains("\"verdict\": \"fail\""));
        let back: Receipt = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verdict, Verdict::Fail);
    }

    #[test]
    fn exact_reconstruction_has_zero_error_and_budget_nan_fails() {
        let (kv, q) = data();
        let (m, _) = compare_kv(&kv, &kv, &q, 8).unwrap();
        assert_eq!(
            (m.key_logit_mse, m.attention_tv, m.topk_disagreement),
            (0.0, 0.0, 0.0)
        );
        let mut bad = m.clone();
        bad.attention_tv = f64::NAN;
        let b = QualityBudget {
            max_attention_tv: Some(1.0),
            ..QualityBudget::default()
        };
        assert_eq!(check_budget(&b, &bad).1, Verdict::Fail);
        assert_eq!(check_budget(&b, &m).1, Verdict::Pass);
    }

    #[test]
    fn calibrated_profile_records_digest() {
        let (kv, q) = data();
        let p = build_profile(&spec(), Some(&kv)).unwrap();
        let want = super::super::profile::calibration_digest(&kv, KvRole::Both).unwrap();
        assert_eq!(p.calibration_digest.as_deref(), Some(want.as_str()));
        let r = evaluate(&p, &kv, &q).unwrap();
        assert!(r.metrics.key_cosine > 0.9, "{}", r.metrics.key_cosine);
        assert_eq!(r.eval_sha256, eval_digest(&kv, &q).unwrap());
    }

    #[test]
    fn mismatched_eval_data_is_an_error() {
        let (kv, q) = data();
        let p = build_profile(&spec(), None).unwrap();
        let mut q3 = q.clone();
        q3.layers.iter_mut().for_each(|l| {
            l.pop();
        });
        assert!(evaluate(&p, &kv, &q3).is_err());
        let mut q1 = q;
        q1.layers.pop();
        assert!(evaluate(&p, &kv, &q1).is_err());
    }
}

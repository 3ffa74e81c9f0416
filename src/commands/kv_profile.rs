//! `qforge kv-profile build` / `verify`: FibQuant KV-cache profiles and receipts
//! ([`crate::kv::run`]). `verify` exits 0 within budget, 3 over budget, 2 on invalid or
//! tampered input. KV files and recipes: docs/kv-profile.md.

use crate::bail_invalid;
use crate::cli::{
    KvAxisArg, KvBuildArgs, KvCaptureArgs, KvCodecKind, KvFallback, KvRoleArg, KvVerifyArgs,
};
use crate::kv::axis::AxisPolicy;
use crate::kv::capture::{CaptureJob, ModelText};
use crate::kv::profile::{CodecKind, FallbackPolicy, ProtectedRegions, QualityBudget, RopeState};
use crate::kv::run::{self, BuildJob, ShapeFrom, VerifyJob};
use crate::kv::KvRole;
use crate::output::print_report;
use anyhow::Result;

/// Runs `qforge kv-profile build`.
pub fn build(args: &KvBuildArgs) -> Result<()> {
    let shape = match (&args.shape, &args.from_model) {
        (Some(s), _) => ShapeFrom::Spec(s),
        (None, Some(p)) => ShapeFrom::Model(p),
        (None, None) => bail_invalid!("give --shape or --from-model"),
    };
    let built = run::build(&BuildJob {
        shape,
        role: match args.role {
            KvRoleArg::Key => KvRole::Key,
            KvRoleArg::Value => KvRole::Value,
            KvRoleArg::Both => KvRole::Both,
        },
        rope: if args.pre_rope {
            RopeState::PreRope
        } else {
            RopeState::PostRope
        },
        codec: match args.codec {
            KvCodecKind::Fibquant => CodecKind::Fibquant,
            KvCodecKind::Turboquant => CodecKind::Turboquant,
        },
        seed: args.seed,
        block_dim: args.block_dim,
        codebook_size: args.codebook_size,
        bits: args.bits,
        tokens_per_page: args.tokens_per_page,
        protected: ProtectedRegions {
            first_tokens: args.protect_first,
            last_tokens: args.protect_last,
            layers: args.protect_layers.clone(),
            heads: args.protect_heads.clone(),
        },
        fallback: match args.fallback {
            KvFallback::KeepRaw => FallbackPolicy::KeepRaw,
            KvFallback::Fail => FallbackPolicy::Fail,
        },
        budget: QualityBudget {
            top_k: args.top_k,
            max_key_logit_mse: args.max_key_logit_mse,
            max_attention_tv: args.max_attention_tv,
            max_topk_disagreement: args.max_topk_disagreement,
            max_value_agg_mse: args.max_value_agg_mse,
            max_perplexity_delta: args.max_perplexity_delta,
        },
        axis: match args.axis {
            KvAxisArg::Raw => AxisPolicy::Raw,
            KvAxisArg::PerToken => AxisPolicy::PerToken,
            KvAxisArg::PerChannel => AxisPolicy::PerChannel,
            KvAxisArg::RoleAware => AxisPolicy::RoleAwareKiviStyle,
        },
        calibration: args.calibration.as_deref(),
        unbiased_norm: args.unbiased_norm,
        channel_basis: args.channel_basis,
        norm_bits: args.norm_bits,
        tiers: &args.tier,
        key_codecs: &args.key_codecs,
        value_codecs: &args.value_codecs,
        output: &args.output,
    })?;
    print_report(args.json, &built.summary(), || built.render_text())
}

/// Runs `qforge kv-profile verify`.
pub fn verify(args: &KvVerifyArgs) -> Result<()> {
    let report = run::verify(&VerifyJob {
        profiles: &args.profile,
        eval: args.eval.as_deref(),
        queries: args.queries.as_deref(),
        model: args.model.as_deref().map(|m| ModelText {
            model: m,
            tokenizer: args.tokenizer.as_deref(),
            text: args.text.as_deref().unwrap_or(m),
            tokens: args.tokens,
            queries: args.model_queries,
        }),
        chunks: args.chunks,
        compare: args.compare,
        output: args.output.as_deref(),
    })?;
    print_report(args.json, &report.document, || report.render_text())?;
    report.check_budget()
}

/// Runs `qforge kv-profile capture`.
pub fn capture(args: &KvCaptureArgs) -> Result<()> {
    let done = crate::kv::capture::capture(&CaptureJob {
        input: ModelText {
            model: &args.model,
            tokenizer: args.tokenizer.as_deref(),
            text: &args.text,
            tokens: args.tokens,
            queries: args.queries,
        },
        output: &args.output,
    })?;
    print_report(args.json, &serde_json::to_value(&done)?, || {
        done.render_text()
    })
}

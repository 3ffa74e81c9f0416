//! The planner: llama.cpp's `quantize_state_impl` (model facts, options, the running
//! counters) and the per-tensor decision it returns.

use super::names::{canonical_name, exclusion, gguf_role, n_dims, parse_blk, Role};
use super::rules::{fallback_type, is_quantized, requires_imatrix};
use super::Mix;
use crate::formats::ggml_type::GgmlType;
use regex::Regex;
use std::fmt;

/// The model hyperparameters the rules read (llama.cpp's `hparams` and `model.type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// llama.cpp architecture (`general.architecture`), or a Hugging Face `model_type`.
    pub arch: String,
    /// Blocks (`{arch}.block_count`, nextn/MTP layers included); 0 = infer from names.
    pub n_layer: u32,
    /// Attention heads of layer 0.
    pub n_head: u32,
    /// KV heads of layer 0; 0 = same as `n_head` (llama.cpp's default).
    pub n_head_kv: u32,
    /// Experts (`{arch}.expert_count`); 0 for dense models.
    pub n_expert: u32,
    /// Whether llama.cpp types the model `LLM_TYPE_70B`; `None` = infer (see [`ModelFacts::is_70b`]).
    pub llm_type_70b: Option<bool>,
}

impl ModelFacts {
    /// llama.cpp's architecture name for [`ModelFacts::arch`] (maps a few HF `model_type`s).
    pub fn llama_arch(&self) -> String {
        let a = self.arch.trim().to_ascii_lowercase();
        match a.as_str() {
            "mistral" | "mixtral" => "llama".to_string(),
            "refinedweb" | "refinedwebmodel" => "falcon".to_string(),
            "nemotron-nas" => "deci".to_string(),
            _ => a,
        }
    }

    /// `hparams.n_gqa()`: heads per KV head (integer division), 0 without heads.
    pub fn n_gqa(&self) -> u32 {
        let kv = if self.n_head_kv == 0 {
            self.n_head
        } else {
            self.n_head_kv
        };
        self.n_head.checked_div(kv).unwrap_or(0)
    }

    /// Whether llama.cpp's loader types the model `LLM_TYPE_70B`: `llm_type_70b` if set,
    /// else `llama` with 80 layers, not 8 experts and `n_head != n_head_kv`,
    /// `qwen2`/`deci`/`olmo` with 80 layers, `jais2` with 68.
    pub fn is_70b(&self) -> bool {
        if let Some(v) = self.llm_type_70b {
            return v;
        }
        let kv = if self.n_head_kv == 0 {
            self.n_head
        } else {
            self.n_head_kv
        };
        match self.llama_arch().as_str() {
            "llama" => self.n_layer == 80 && self.n_expert != 8 && self.n_head != kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// llama-quantize's options that change type choice.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--pure`: no mix rules; every quantizable tensor gets the base type (overrides,
    /// `--output-tensor-type`, `--token-embedding-type` and fallbacks still apply).
    pub pure: bool,
    /// `--output-tensor-type`: type of `output.weight` (and of tied token embeddings).
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`: type of `token_embd.weight`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: copy `output.weight` unchanged.
    pub leave_output_tensor: bool,
    /// `--tensor-type PATTERN=TYPE`, first match wins (searched anywhere in the name).
    /// Like llama.cpp, they are only consulted when the mix's base type is a block type
    /// (not for F16/BF16/F32). llama-quantize lowercases patterns; do that when parsing.
    pub overrides: Vec<(Regex, GgmlType)>,
    /// Whether an importance matrix is given (`--imatrix`).
    pub has_imatrix: bool,
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------

/// The decision for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Output type; only meaningful when `quantize` (otherwise F32 as a placeholder).
    pub ty: GgmlType,
    /// Whether the tensor goes through the quantizer (llama.cpp's
    /// `tensor_allows_quantization`). When false it keeps its source type; when true and
    /// `ty` equals the source type, llama.cpp copies it too.
    pub quantize: bool,
    /// Why: `copy: 1-D`, `mix: attn_v`, `override`, `fallback: Q4_K -> Q5_0 ...`, ...
    pub reason: &'static str,
    /// The type chosen before a row-length fallback replaced it.
    pub fallback_from: Option<GgmlType>,
    /// Whether llama.cpp needs importance-matrix data for this tensor at this type
    /// ([`requires_imatrix`]); it aborts when the entry is missing.
    pub requires_imatrix: bool,
}

impl Choice {
    fn keep(reason: &'static str) -> Choice {
        Choice {
            ty: GgmlType::F32,
            quantize: false,
            reason,
            fallback_from: None,
            requires_imatrix: false,
        }
    }

    /// The output type, or `None` when the tensor keeps its source type.
    pub fn target(&self) -> Option<GgmlType> {
        self.quantize.then_some(self.ty)
    }
}

/// Where llama.cpp aborts instead of choosing a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixError {
    /// The row length does not fit the chosen type and llama.cpp has no fallback for it
    /// ("no tensor type fallback is defined for type ..."): types of blocks over 32
    /// values without a fallback (Q1_0, NVFP4).
    NoFallback {
        /// Tensor name.
        name: String,
        /// Type that does not fit.
        ty: GgmlType,
        /// Row length (`ne[0]`).
        ncols: u64,
    },
    /// A type forced by `--output-tensor-type` / `--token-embedding-type` does not fit the
    /// row (llama.cpp fails in ggml when sizing the tensor).
    ForcedTypeDoesNotFit {
        /// Tensor name.
        name: String,
        /// Forced type.
        ty: GgmlType,
        /// Row length (`ne[0]`).
        ncols: u64,
    },
    /// MoE model (more than one expert) and the FFN tensor's layer cannot be read from a
    /// `blk.N.` name or is not below `n_layer`.
    BadLayer {
        /// Tensor name.
        name: String,
        /// Layer count the layer must be below.
        n_layer: u32,
    },
    /// The tensor's type needs an importance matrix and none was given.
    NeedsImatrix {
        /// Tensor name.
        name: String,
        /// Chosen type.
        ty: GgmlType,
    },
}

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixError::NoFallback { name, ty, ncols } => write!(
                f,
                "tensor {name}: {ncols} columns are not a multiple of {} (required for {ty}) \
                 and llama.cpp defines no fallback for {ty}",
                ty.block_size()
            ),
            MixError::ForcedTypeDoesNotFit { name, ty, ncols } => write!(
                f,
                "tensor {name}: {ncols} columns are not a multiple of {} (required for the \
                 requested type {ty})",
                ty.block_size()
            ),
            MixError::BadLayer { name, n_layer } => write!(
                f,
                "tensor {name}: cannot determine its layer (expected blk.N. with N < {n_layer})"
            ),
            MixError::NeedsImatrix { name, ty } => write!(
                f,
                "tensor {name}: {ty} in this mix requires an importance matrix (--imatrix)"
            ),
        }
    }
}

impl std::error::Error for MixError {}

// ---------------------------------------------------------------------------------------
// Planner
// ---------------------------------------------------------------------------------------

/// llama.cpp's `quantize_state_impl`: the mix, facts, options and the running counters.
#[derive(Debug, Clone)]
pub struct Planner {
    pub(super) mix: Mix,
    pub(super) facts: ModelFacts,
    pub(super) opts: Options,
    pub(super) arch: String,
    pub(super) is_70b: bool,
    pub(super) n_layer: u32,
    pub(super) n_attention_wv: i64,
    pub(super) i_attention_wv: i64,
    pub(super) i_ffn_down: i64,
    pub(super) i_ffn_gate: i64,
    pub(super) i_ffn_up: i64,
    pub(super) n_fallback: usize,
    pub(super) has_tied_embeddings: bool,
}

impl Planner {
    /// Sets up the counters from the whole tensor list (names and ggml-order shapes,
    /// innermost first) like llama.cpp's `init_quantize_state_counters`:
    /// `n_attention_wv` counts the `attn_v`-like tensors, embeddings count as tied when no
    /// `output.weight` exists, and the FFN counts are `n_layer`.
    pub fn new<N, S>(mix: Mix, facts: ModelFacts, opts: Options, tensors: &[(N, S)]) -> Planner
    where
        N: AsRef<str>,
        S: AsRef<[u64]>,
    {
        let mut n_attention_wv = 0;
        let mut has_tied_embeddings = true;
        let mut max_blk: Option<i64> = None;
        for (name, _) in tensors {
            let gguf = canonical_name(name.as_ref());
            let role = gguf_role(&gguf);
            if role.is_attn_v_like() {
                n_attention_wv += 1;
            }
            if role == Role::Output {
                has_tied_embeddings = false;
            }
            if let Some(b) = parse_blk(&gguf) {
                max_blk = max_blk.max(Some(b));
            }
        }
        let n_layer = if facts.n_layer == 0 {
            max_blk.map_or(0, |b| (b + 1).clamp(0, u32::MAX as i64) as u32)
        } else {
            facts.n_layer
        };
        let arch = facts.llama_arch();
        let is_70b = facts.is_70b();
        Planner {
            mix,
            facts,
            opts,
            arch,
            is_70b,
            n_layer,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
            has_tied_embeddings,
        }
    }

    /// The mix being planned.
    pub fn mix(&self) -> Mix {
        self.mix
    }

    /// Layer count used by the FFN rules (facts, or inferred from `blk.N` names).
    pub fn n_layer(&self) -> u32 {
        self.n_layer
    }

    /// Number of `attn_v`-like tensors (`attn_v`, `attn_qkv`, `attn_kv_b`) in the list.
    pub fn n_attention_wv(&self) -> usize {
        self.n_attention_wv as usize
    }

    /// Whether the model has no `output.weight` (token embeddings double as output).
    pub fn has_tied_embeddings(&self) -> bool {
        self.has_tied_embeddings
    }

    /// Tensors so far whose row length forced a fallback type.
    pub fn fallbacks(&self) -> usize {
        self.n_fallback
    }

    /// Decides the next tensor (call in file order) exactly as llama.cpp, or returns the
    /// error where llama.cpp aborts the run; after an error the planner's counters are
    /// unspecified.
    pub fn try_choose(&mut self, name: &str, ne: &[u64]) -> Result<Choice, MixError> {
        self.decide(name, ne, true)
    }

    /// Like [`Planner::try_choose`] but never fails: where llama.cpp aborts it picks F16
    /// for a row no fallback fits, applies the fallback table to a forced type that does
    /// not fit, uses the running counter for an MoE tensor without a usable `blk.N`, and
    /// only flags [`Choice::requires_imatrix`].
    pub fn choose(&mut self, name: &str, ne: &[u64]) -> Choice {
        self.decide(name, ne, false)
            .expect("lenient planning does not fail")
    }

    fn decide(&mut self, name: &str, ne: &[u64], strict: bool) -> Result<Choice, MixError> {
        if self.mix == Mix::COPY {
            return Ok(Choice::keep("copy: COPY"));
        }
        let gguf = canonical_name(name);
        if let Some(why) = exclusion(&gguf, n_dims(ne), self.opts.leave_output_tensor) {
            return Ok(Choice::keep(why));
        }
        let role = gguf_role(&gguf);
        let ncols = ne.first().copied().unwrap_or(1);

        let forced = match role {
            Role::TokenEmbd => self
                .opts
                .token_embedding_type
                .map(|t| (t, "--token-embedding-type")),
            Role::Output => self
                .opts
                .output_tensor_type
                .map(|t| (t, "--output-tensor-type")),
            _ => None,
        };
        let mut fallback_from = None;
        let (ty, reason) = if let Some((ty, reason)) = forced {
            if ncols % ty.block_size() == 0 {
                (ty, reason)
            } else if strict {
                return Err(MixError::ForcedTypeDoesNotFit {
                    name: name.to_string(),
                    ty,
                    ncols,
                });
            } else {
                fallback_from = Some(ty);
                self.fallback(name, ty, ncols, false)?
            }
        } else {
            let base = self.mix.base_type();
            let mut ty = base;
            let mut reason = "mix: base type";
            if is_quantized(base) {
                let manual = self
                    .opts
                    .overrides
                    .iter()
                    .find(|(re, _)| re.is_match(name) || re.is_match(&gguf))
                    .map(|(_, t)| *t);
                if let Some(t) = manual {
                    ty = t;
                    reason = "override";
                } else if self.opts.pure {
                    reason = "--pure";
                } else {
                    (ty, reason) = self.rule(&gguf, ne, role, strict)?;
                }
                if ncols % ty.block_size() != 0 {
                    fallback_from = Some(ty);
                    (ty, reason) = self.fallback(name, ty, ncols, strict)?;
                }
            }
            (ty, reason)
        };

        let needs = requires_imatrix(&gguf, ty, self.mix);
        if strict && needs && !self.opts.has_imatrix {
            return Err(MixError::NeedsImatrix {
                name: name.to_string(),
                ty,
            });
        }
        Ok(Choice {
            ty,
            quantize: true,
            reason,
            fallback_from,
            requires_imatrix: needs,
        })
    }

    /// `tensor_type_fallback` for a row that is not a whole number of `ty` blocks.
    fn fallback(
        &mut self,
        name: &str,
        ty: GgmlType,
        ncols: u64,
        strict: bool,
    ) -> Result<(GgmlType, &'static str), MixError> {
        self.n_fallback += 1;
        let Some(to) = fallback_type(ty) else {
            // llama.cpp's default case: a type of 32-value blocks or smaller has nothing
            // smaller to go to and becomes F16; a larger one aborts the run.
            if ty.block_size() <= 32 {
                return Ok((GgmlType::F16, "fallback: F16 (row not a multiple of 32)"));
            }
            if strict {
                return Err(MixError::NoFallback {
                    name: name.to_string(),
                    ty,
                    ncols,
                });
            }
            return Ok((
                GgmlType::F16,
                "fallback: F16 (no fallback type exists; llama.cpp aborts here)",
            ));
        };
        if !ncols.is_multiple_of(to.block_size()) {
            return Ok((GgmlType::F16, "fallback: F16 (row not a multiple of 32)"));
        }
        use GgmlType as T;
        let reason = match (ty, to) {
            (T::Q2_K, _) => "fallback: Q2_K -> Q4_0 (row not a multiple of 256)",
            (T::Q3_K, _) => "fallback: Q3_K -> Q4_0 (row not a multiple of 256)",
            (T::Q4_K, _) => "fallback: Q4_K -> Q5_0 (row not a multiple of 256)",
            (T::Q5_K, _) => "fallback: Q5_K -> Q5_1 (row not a multiple of 256)",
            (T::Q6_K, _) => "fallback: Q6_K -> Q8_0 (row not a multiple of 256)",
            (_, T::IQ4_NL) => "fallback: -> IQ4_NL (row not a multiple of 256)",
            _ => "fallback: row not a multiple of the block size",
        };
        Ok((to, reason))
    }

    /// llama.cpp's layer index for an FFN tensor: the running counter, or for MoE models
    /// the `blk.N` of the name (`layer_info`).
    pub(super) fn layer_info(
        &self,
        counter: i64,
        gguf: &str,
        strict: bool,
    ) -> Result<(i64, i64), MixError> {
        let n_layer = self.n_layer as i64;
        if self.facts.n_expert.max(1) > 1 {
            match parse_blk(gguf) {
                Some(i) if (0..n_layer).contains(&i) => return Ok((i, n_layer)),
                _ if strict => {
                    return Err(MixError::BadLayer {
                        name: gguf.to_string(),
                        n_layer: self.n_layer,
                    })
                }
                _ => {}
            }
        }
        Ok((counter, n_layer))
    }
}

/// Plans a whole tensor list in order with [`Planner::try_choose`].
pub fn plan<N, S>(
    mix: Mix,
    facts: ModelFacts,
    opts: Options,
    tensors: &[(N, S)],
) -> Result<Vec<Choice>, MixError>
where
    N: AsRef<str>,
    S: AsRef<[u64]>,
{
    let mut planner = Planner::new(mix, facts, opts, tensors);
    tensors
        .iter()
        .map(|(n, s)| planner.try_choose(n.as_ref(), s.as_ref()))
        .collect()
}

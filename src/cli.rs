//! The command-line interface, declared with clap's derive API.
//!
//! `completions/` and `man/` are generated from [`Cli::command`]; the test
//! `tests/cli/generated_docs.rs` fails when they are stale (`QFORGE_BLESS=1 cargo test
//! --test cli generated_docs` rewrites them).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Quantization toolchain for model checkpoints.
///
/// Exit codes: 0 success, 1 runtime failure (I/O, disk full, internal error),
/// 2 usage error or invalid input, 3 quality budget exceeded (kv-profile verify).
#[derive(Debug, Parser)]
#[command(name = "qforge", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// qforge's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Quantize a safetensors or GGUF model to GGUF (llama.cpp types and mixes).
    Quantize(QuantizeArgs),
    /// Write the native QNAT format (NF4/FP4 with double quantization, k-quants, floats).
    ExportNative(ExportNativeArgs),
    /// Show format, metadata and tensors of a safetensors, GGUF or QNAT file.
    Inspect(InspectArgs),
    /// Build or verify KV-cache compression profiles.
    #[command(subcommand)]
    KvProfile(KvProfileCommand),
    /// Benchmark dequant-GEMM/GEMV kernels against a roofline and candle.
    BenchGemm(BenchGemmArgs),
}

/// Arguments of `qforge inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .gguf, .safetensors or .qnat file, a *.safetensors.index.json, or a model folder.
    pub path: PathBuf,
    /// Print one JSON document (schema qforge.inspect/1, see docs/inspect-json.md).
    #[arg(long)]
    pub json: bool,
    /// List every tensor in the text output (JSON always lists them).
    #[arg(long)]
    pub tensors: bool,
    /// Only tensors whose name matches this regular expression (totals follow the filter).
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
    /// Array values longer than this are cut (JSON: elements kept; text: elements shown).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_array: usize,
    /// Also read all tensor data and check stored checksums (QNAT).
    #[arg(long)]
    pub verify: bool,
}

/// Output container of `qforge quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// GGUF v3 (llama.cpp).
    Gguf,
    /// qforge's native QNAT v2.
    Qnat,
    /// Hugging Face safetensors in the bitsandbytes 4-bit layout.
    BnbSafetensors,
}

/// Arguments of `qforge quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Input model: .gguf, .safetensors, *.safetensors.index.json or a model folder. A
    /// Hugging Face folder (config.json beside the weights) is converted as
    /// convert_hf_to_gguf.py does: -t F32/F16/BF16/Q8_0 is its --outtype, other types
    /// are llama-quantize applied to its output.
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long, required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,
    /// Target type or llama.cpp mix: Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S, Q3_K_M, Q3_K_S,
    /// Q3_K_L, Q2_K, Q6_K, Q8_0, Q4_0, F16, BF16, ... (default Q4_K_M); with
    /// --format bnb-safetensors NF4 or FP4 (default NF4).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub qtype: Option<String>,
    /// Output container.
    #[arg(long, value_enum, default_value_t = OutputFormat::Gguf)]
    pub format: OutputFormat,
    /// Per-tensor type override, REGEX=TYPE; repeatable, the first match wins.
    #[arg(long, value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<String>,
    /// Type of output.weight.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
    /// Use the base type for every tensor: no mix rules.
    #[arg(long)]
    pub pure: bool,
    /// Leave output.weight unquantized.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Allow re-quantizing tensors that are already quantized.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Importance matrix: GGUF imatrix or legacy llama.cpp .dat.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Use importance weights only for tensors matching this regex (repeatable).
    #[arg(long, value_name = "REGEX", conflicts_with = "exclude_weights")]
    pub include_weights: Vec<String>,
    /// Do not use importance weights for tensors matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude_weights: Vec<String>,
    /// Quantize tensors with NaN or infinite values instead of refusing.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// NF4/FP4 block size (bnb-safetensors, qnat).
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// Double-quantize the NF4/FP4 absmax values (bnb-safetensors, qnat).
    #[arg(long)]
    pub double_quant: bool,
    /// Compute dtype recorded for NF4/FP4 outputs (bnb-safetensors, qnat).
    #[arg(long, value_enum, default_value_t = ComputeDtype::Bf16)]
    pub compute_dtype: ComputeDtype,
    /// Worker threads (default: all cores). Output bytes do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the plan and the output size; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout (schema qforge.quantize/1).
    #[arg(long)]
    pub json: bool,
    /// Hugging Face folder: keep the checkpoint's tensor names and write no
    /// hyperparameters or tokenizer (a GGUF llama.cpp cannot load; on purpose only).
    #[arg(long)]
    pub raw_names: bool,
    /// Hugging Face folder: general.name (convert_hf_to_gguf.py --model-name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Hugging Face folder: JSON file of general.* overrides (convert_hf_to_gguf.py
    /// --metadata).
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,
    /// Hugging Face folder: write no tokenizer keys (for a folder without a tokenizer).
    #[arg(long)]
    pub no_vocab: bool,
}

/// Quantization scheme of `qforge export-native`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    /// bitsandbytes NormalFloat4.
    Nf4,
    /// bitsandbytes FP4.
    Fp4,
    /// ggml Q4_K.
    #[value(name = "q4_k")]
    Q4K,
    /// ggml Q5_K.
    #[value(name = "q5_k")]
    Q5K,
    /// ggml Q6_K.
    #[value(name = "q6_k")]
    Q6K,
    /// ggml Q8_0.
    #[value(name = "q8_0")]
    Q8_0,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE single.
    F32,
}

/// Compute dtype recorded in a QNAT file or a bitsandbytes config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComputeDtype {
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    Bf16,
}

impl ComputeDtype {
    /// torch's name (`float32`, `float16`, `bfloat16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            ComputeDtype::F32 => "float32",
            ComputeDtype::F16 => "float16",
            ComputeDtype::Bf16 => "bfloat16",
        }
    }
}

/// Arguments of `qforge export-native`.
#[derive(Debug, Args)]
pub struct ExportNativeArgs {
    /// Input model (safetensors, sharded folder, GGUF, or QNAT with --dequantize).
    pub input: PathBuf,
    /// Output file (.qnat; with --dequantize, .safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Scheme for float weight tensors.
    #[arg(long, value_enum, default_value_t = Scheme::Nf4)]
    pub scheme: Scheme,
    /// Block size for NF4/FP4 (power of two, 32..4096).
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// Quantize the per-block absmax values again (8-bit, 256 per block).
    #[arg(long)]
    pub double_quant: bool,
    /// Model name stored in the metadata (default: input file stem).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Compute dtype stored in the metadata.
    #[arg(long, value_enum, default_value_t = ComputeDtype::Bf16)]
    pub compute_dtype: ComputeDtype,
    /// Dequantize a QNAT input back to f32 safetensors.
    #[arg(long)]
    pub dequantize: bool,
    /// Quantize tensors with NaN or infinite values instead of refusing.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `qforge kv-profile` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvProfileCommand {
    /// Build a KV-cache compression profile (JSON).
    Build(KvBuildArgs),
    /// Verify a profile on evaluation KV and write a receipt (exit 3 when over budget).
    Verify(KvVerifyArgs),
}

/// Arguments of `qforge kv-profile build`.
#[derive(Debug, Args)]
pub struct KvBuildArgs {
    /// KV shape as layers=L,kv_heads=H,query_heads=Q,head_dim=D,tokens=T.
    #[arg(long, value_name = "SPEC", required_unless_present = "from_model")]
    pub shape: Option<String>,
    /// Take the shape from a GGUF file's metadata or a Hugging Face config.json.
    #[arg(long, value_name = "FILE", conflicts_with = "shape")]
    pub from_model: Option<PathBuf>,
    /// Calibration KV (safetensors with layer.{i}.key / layer.{i}.value, [kv_heads, tokens, head_dim]).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    /// Codec family.
    #[arg(long, value_enum, default_value_t = KvCodecKind::Fibquant)]
    pub codec: KvCodecKind,
    /// Bits per codeword index (codebook size 2^bits) unless --codebook-size is given.
    #[arg(long, conflicts_with = "codebook_size")]
    pub bits: Option<u32>,
    /// Coordinates per codeword (k: 2, 4 or 8 for fibquant; turboquant uses 1).
    #[arg(long, default_value_t = 4)]
    pub block_dim: usize,
    /// Codewords in the codebook (N, a power of two; default 256).
    #[arg(long)]
    pub codebook_size: Option<usize>,
    /// Seed of the rotation and of the training samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which tensors are compressed.
    #[arg(long, value_enum, default_value_t = KvRoleArg::Both)]
    pub role: KvRoleArg,
    /// Keys were captured before RoPE (default: after, as a KV cache holds them).
    #[arg(long)]
    pub pre_rope: bool,
    /// Tokens per page.
    #[arg(long, default_value_t = 256)]
    pub tokens_per_page: usize,
    /// Keep the first N tokens of every head raw (attention sinks).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub protect_first: usize,
    /// Keep the last N tokens of every head raw (recent window).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub protect_last: usize,
    /// Keep these layers raw (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "L")]
    pub protect_layers: Vec<usize>,
    /// Keep these KV heads raw in every layer (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "H")]
    pub protect_heads: Vec<usize>,
    /// What to do with a page that cannot be encoded.
    #[arg(long, value_enum, default_value_t = KvFallback::KeepRaw)]
    pub fallback: KvFallback,
    /// k of the top-k disagreement metric.
    #[arg(long, default_value_t = 8)]
    pub top_k: usize,
    /// Budget: maximum key-logit MSE.
    #[arg(long, value_name = "X")]
    pub max_key_logit_mse: Option<f64>,
    /// Budget: maximum mean attention total variation.
    #[arg(long, value_name = "X")]
    pub max_attention_tv: Option<f64>,
    /// Budget: maximum mean top-k disagreement.
    #[arg(long, value_name = "X")]
    pub max_topk_disagreement: Option<f64>,
    /// Budget: maximum value-aggregation MSE.
    #[arg(long, value_name = "X")]
    pub max_value_agg_mse: Option<f64>,
    /// Output profile.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// KV codec family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCodecKind {
    /// Radial-angular vector codebook (FibQuant).
    Fibquant,
    /// Rotation + per-coordinate Lloyd-Max scalar codebook (TurboQuant-style).
    Turboquant,
}

/// Which KV tensors a profile compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvRoleArg {
    /// Keys only.
    Key,
    /// Values only.
    Value,
    /// Keys and values.
    Both,
}

/// Fallback policy for pages that cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvFallback {
    /// Store the page raw and record why.
    KeepRaw,
    /// Fail the run.
    Fail,
}

/// Arguments of `qforge kv-profile verify`.
#[derive(Debug, Args)]
pub struct KvVerifyArgs {
    /// The profile to verify.
    pub profile: PathBuf,
    /// Evaluation KV (safetensors); deterministic synthetic KV of the profile's shape when absent.
    #[arg(long, value_name = "FILE")]
    pub eval: Option<PathBuf>,
    /// Queries (safetensors, layer.{i}.query, [query_heads, n, head_dim]); required with --eval.
    #[arg(long, value_name = "FILE", requires = "eval")]
    pub queries: Option<PathBuf>,
    /// Also run the baselines (TurboQuant-style, KIVI-2, q8_0, q4_0) in the same run.
    #[arg(long)]
    pub compare: bool,
    /// Receipt output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the receipt JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `qforge bench-gemm`.
#[derive(Debug, Args)]
pub struct BenchGemmArgs {
    /// Weight type: q4_k, q6_k, q8_0, q4_0, nf4.
    #[arg(long = "type", value_name = "TYPE", default_value = "q4_k")]
    pub wtype: String,
    /// Token counts (m), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,512")]
    pub m: Vec<usize>,
    /// Inner dimension.
    #[arg(long, default_value_t = 4096)]
    pub k: usize,
    /// Output rows.
    #[arg(long, default_value_t = 14336)]
    pub n: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Take the weights from this model file instead of random ones.
    #[arg(long, requires = "tensor")]
    pub weights: Option<PathBuf>,
    /// Tensor name within --weights.
    #[arg(long)]
    pub tensor: Option<String>,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Strategies to run, comma-separated: fused, lazy-dequant, eager-dequant, candle.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fused,lazy-dequant,eager-dequant,candle"
    )]
    pub backends: Vec<String>,
    /// Instruction set of the fused kernels: auto, avx512, avx2, scalar.
    #[arg(long, default_value = "auto")]
    pub isa: String,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

//! The command-line interface, declared with clap's derive API.
//!
//! `completions/` and `man/` are generated from [`Cli::command`]; the test
//! `tests/cli/generated_docs.rs` fails when they are stale (`QFORGE_BLESS=1 cargo test
//! --test cli generated_docs` rewrites them).

use crate::cpu::Level;
use crate::formats::ggml_type::GgmlType;
use crate::kernels::WeightType;
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

/// A clap usage error as one line (`error: ...`, the valid values appended), as every other
/// invalid-input error is reported; `None` for help and version output, which clap prints.
pub fn one_line_error(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let rendered = err.render().to_string();
    let mut line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: invalid command line")
        .trim_end()
        .to_string();
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        line.push_str(&format!(" (valid: {})", valid.join(", ")));
    }
    Some(line)
}

impl Command {
    /// The `--isa` of a subcommand that computes; `None` for one that does not (inspect).
    pub fn isa(&self) -> Option<IsaChoice> {
        match self {
            Command::Inspect(_) => None,
            Command::Quantize(a) => Some(a.isa),
            Command::ExportNative(a) => Some(a.isa),
            Command::KvProfile(KvProfileCommand::Build(a)) => Some(a.isa),
            Command::KvProfile(KvProfileCommand::Verify(a)) => Some(a.isa),
            Command::BenchGemm(a) => Some(a.isa),
        }
    }
}

/// `--isa`: the instruction set of the kernels ([`crate::cpu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsaChoice {
    /// The QFORGE_ISA environment variable if set, else the best this CPU has.
    Auto,
    /// AVX-512 (with VNNI where a kernel uses it and the CPU has it).
    Avx512,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// Portable code, no SIMD.
    Scalar,
}

impl From<IsaChoice> for Option<Level> {
    fn from(c: IsaChoice) -> Option<Level> {
        match c {
            IsaChoice::Auto => None,
            IsaChoice::Avx512 => Some(Level::Avx512),
            IsaChoice::Avx2 => Some(Level::Avx2),
            IsaChoice::Scalar => Some(Level::Scalar),
        }
    }
}

/// The ggml types qforge can quantize to (those with a codec), in table order.
fn quant_types() -> impl Iterator<Item = GgmlType> {
    GgmlType::ALL
        .iter()
        .copied()
        .filter(|t| t.codec().is_some())
}

/// Parses a ggml type name by the type table (case-insensitive); only types with a codec.
fn quant_type(name: &str) -> Result<GgmlType, String> {
    match GgmlType::from_name(name) {
        Some(t) if t.codec().is_some() => Ok(t),
        Some(t) => Err(format!("quantizing to {t} is not implemented")),
        None => Err(format!("unknown ggml type {name:?}")),
    }
}

/// clap parser of a TYPE value: [`quant_type`], with the names as possible values.
#[derive(Debug, Clone, Copy)]
pub struct QuantTypeParser;

impl clap::builder::TypedValueParser for QuantTypeParser {
    type Value = GgmlType;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<GgmlType, clap::Error> {
        let name = value.to_str().unwrap_or_default();
        quant_type(name).map_err(|e| {
            let flag = arg.map(|a| a.to_string()).unwrap_or_default();
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{name}' for '{flag}': {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            quant_types().map(|t| clap::builder::PossibleValue::new(t.name())),
        ))
    }
}

/// One `--tensor-type REGEX=TYPE`: tensors whose name matches `pattern` get `ty`.
#[derive(Debug, Clone)]
pub struct TypeOverride {
    /// The tensor-name pattern.
    pub pattern: regex::Regex,
    /// The type of the matching tensors.
    pub ty: GgmlType,
}

fn parse_type_override(spec: &str) -> Result<TypeOverride, String> {
    let (re, ty) = spec
        .split_once('=')
        .ok_or_else(|| "expected REGEX=TYPE".to_string())?;
    Ok(TypeOverride {
        pattern: regex::Regex::new(re).map_err(|e| e.to_string())?,
        ty: quant_type(ty)?,
    })
}

fn type_override_help() -> String {
    let names: Vec<&str> = quant_types().map(GgmlType::name).collect();
    format!(
        "Per-tensor type override, REGEX=TYPE; repeatable, the first match wins. TYPE (any case): {}",
        names.join(", ")
    )
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
    /// Input model: .gguf, .safetensors, *.safetensors.index.json or a model folder.
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
    #[arg(long, value_name = "REGEX=TYPE", value_parser = parse_type_override, help = type_override_help())]
    pub tensor_type: Vec<TypeOverride>,
    /// Type of output.weight.
    #[arg(long, value_name = "TYPE", value_parser = QuantTypeParser)]
    pub output_tensor_type: Option<GgmlType>,
    /// Type of token_embd.weight.
    #[arg(long, value_name = "TYPE", value_parser = QuantTypeParser)]
    pub token_embedding_type: Option<GgmlType>,
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
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
    /// Print the plan and the output size; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout (schema qforge.quantize/1).
    #[arg(long)]
    pub json: bool,
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
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
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
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
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
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,

    /// Print the receipt JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `qforge bench-gemm`.
#[derive(Debug, Args)]
pub struct BenchGemmArgs {
    /// Weight type.
    #[arg(long = "type", value_name = "TYPE", value_enum, ignore_case = true, default_value_t = WeightType::Q4K)]
    pub wtype: WeightType,
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
    /// Instruction set of the kernels (fused: avx512 runs VNNI where the CPU has it) (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,

    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

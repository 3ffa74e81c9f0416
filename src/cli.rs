//! The command-line interface, declared with clap's derive API.
//!
//! `completions/` and `man/` are generated from [`Cli::command`]; the test
//! `tests/cli/generated_docs.rs` fails when they are stale (`QFORGE_BLESS=1 cargo test
//! --test cli generated_docs` rewrites them).

use crate::cpu::Level;
use crate::formats::ggml_type::GgmlType;
use crate::kernels::WeightType;
use crate::quant::mix::QUANT_OPTIONS;
use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Quantization toolchain for model checkpoints.
///
/// Exit codes: 0 success, 1 runtime failure (I/O, disk full, internal error),
/// 2 usage error or invalid input, 3 quality budget exceeded (kv-profile verify).
#[derive(Debug, Parser)]
#[command(
    name = "qforge",
    version,
    about,
    long_about,
    propagate_version = true,
    after_long_help = EXAMPLES_QFORGE
)]
pub struct Cli {
    /// More log output on stderr: -v the plan (info), -vv per-tensor timing (debug),
    /// -vvv trace; RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress bar and no text report (JSON with --json and errors still print).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// qforge's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Quantize a safetensors or GGUF model to GGUF (llama.cpp types and mixes).
    #[command(after_long_help = EXAMPLES_QUANTIZE, override_usage = USAGE_QUANTIZE)]
    Quantize(QuantizeArgs),
    /// Write the native QNAT format (NF4/FP4 with double quantization, k-quants, floats).
    #[command(after_long_help = EXAMPLES_EXPORT_NATIVE)]
    ExportNative(ExportNativeArgs),
    /// Show format, metadata and tensors of a safetensors, GGUF or QNAT file.
    #[command(after_long_help = EXAMPLES_INSPECT)]
    Inspect(InspectArgs),
    /// Build or verify KV-cache compression profiles.
    #[command(subcommand, after_long_help = EXAMPLES_KV_PROFILE)]
    KvProfile(KvProfileCommand),
    /// Benchmark dequant-GEMM/GEMV kernels against a roofline and candle.
    #[command(after_long_help = EXAMPLES_BENCH_GEMM)]
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
            Command::KvProfile(KvProfileCommand::Capture(_)) => None,
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

/// clap parser of a TYPE value: `quant_type`, with the names as possible values.
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

/// Parses `--tensor-type REGEX=TYPE` (also a word of `--tensor-type-file`); like
/// llama-quantize, the pattern is lower-cased.
pub fn parse_type_override(spec: &str) -> Result<TypeOverride, String> {
    let (re, ty) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected REGEX=TYPE"))?;
    if re.is_empty() {
        return Err(format!("{spec:?}: missing tensor name"));
    }
    Ok(TypeOverride {
        pattern: regex::Regex::new(&re.to_lowercase()).map_err(|e| e.to_string())?,
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
    /// Input model: .gguf (the first file of a split GGUF brings the others),
    /// .safetensors, *.safetensors.index.json or a model folder. A Hugging Face folder
    /// (config.json beside the weights) is converted as convert_hf_to_gguf.py does: -t
    /// F32/F16/BF16/Q8_0 is its --outtype, other types are llama-quantize applied to its
    /// output.
    #[arg(
        required_unless_present = "list_types",
        default_value = "-",
        hide_default_value = true
    )]
    pub input: PathBuf,
    /// llama-quantize's positional form after INPUT: \[OUTPUT\] TYPE \[NTHREADS\] (the
    /// help text, without rustdoc's escapes, is in `help`).
    #[arg(
        value_name = "OUTPUT TYPE NTHREADS",
        num_args = 0..=3,
        help = "llama-quantize's positional form after INPUT: [OUTPUT] TYPE [NTHREADS]. TYPE is a name or llama-quantize's ftype number; without OUTPUT the file is ggml-model-TYPE.gguf beside the input. Not combined with -o, -t or --threads"
    )]
    pub positional: Vec<String>,
    /// Output file (a folder with --format bnb-safetensors).
    #[arg(short, long, required_unless_present_any = ["dry_run", "list_types", "positional"])]
    pub output: Option<PathBuf>,
    /// Target type or llama.cpp mix by name (default Q4_K_M; with --format
    /// bnb-safetensors or qnat, NF4). Names only: llama-quantize's numeric ids are taken
    /// in the positional form. --list-types shows every type llama-quantize knows.
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        ignore_case = true,
        value_parser = NameOf::<TypeName>::names_only("type", TYPE_NAMES_ONLY)
    )]
    pub qtype: Option<String>,
    /// List every type and mix llama-quantize knows (bits per weight, whether an
    /// importance matrix is required, whether qforge implements it) and exit.
    #[arg(long, conflicts_with_all = ["dry_run", "output"])]
    pub list_types: bool,
    /// Output container.
    #[arg(long, value_enum, ignore_case = true, default_value_t = OutputFormat::Gguf)]
    pub format: OutputFormat,
    /// Per-tensor type override, REGEX=TYPE; repeatable, the first match wins.
    #[arg(long, value_name = "REGEX=TYPE", value_parser = parse_type_override, help = type_override_help())]
    pub tensor_type: Vec<TypeOverride>,
    /// A file of REGEX=TYPE overrides separated by spaces or newlines (after --tensor-type's).
    #[arg(long, value_name = "FILE")]
    pub tensor_type_file: Vec<PathBuf>,
    /// Remove these blocks (blk.N) and renumber the later ones; sets ARCH.block_count.
    #[arg(long, value_name = "L0,L1,...")]
    pub prune_layers: Vec<String>,
    /// Set a metadata key in the output: KEY=TYPE:VALUE, TYPE int (written u32), float
    /// (f32), bool or str; repeatable.
    #[arg(long, value_name = "KEY=TYPE:VALUE")]
    pub override_kv: Vec<String>,
    /// Split input: write one output file per input file, named OUTPUT-0000i-of-0000N.gguf
    /// (OUTPUT without .gguf) with gguf-split's split.* keys.
    #[arg(long)]
    pub keep_split: bool,
    /// llama-quantize's row buffer limit in MiB; accepted for drop-in use (qforge encodes
    /// a tensor in chunks of about 8 MiB whatever the value).
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_buffer_size: Option<u64>,
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
    /// Report the output's SHA-256 (computed on the bytes as they are written; off by
    /// default, as llama-quantize computes none).
    #[arg(long)]
    pub digest: bool,
    /// NF4/FP4 block size (bnb-safetensors, qnat).
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// Double-quantize the NF4/FP4 absmax values (bnb-safetensors, qnat).
    #[arg(long)]
    pub double_quant: bool,
    /// Compute dtype recorded for NF4/FP4 outputs (bnb-safetensors, qnat).
    #[arg(long, value_enum, ignore_case = true, default_value_t = ComputeDtype::Bf16)]
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
    /// Print one JSON document on stdout (schema qforge.quantize/2, see
    /// docs/quantize-json.md; with --list-types qforge.quantize-types/1).
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

/// Which scales decode a qlora-rs double-quantized tensor (`--scales`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QloraScales {
    /// the 8-bit scales as stored: `(code - 128) * factor`, as qlora-rs decodes them
    Stored,
    /// the exact f32 scales (qlora-rs 1.0 files only)
    Exact,
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
    #[arg(long, value_enum, ignore_case = true, default_value_t = Scheme::Nf4)]
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
    #[arg(long, value_enum, ignore_case = true, default_value_t = ComputeDtype::Bf16)]
    pub compute_dtype: ComputeDtype,
    /// Dequantize a QNAT input (qforge's v2 or a qlora-rs file) back to f32 safetensors.
    #[arg(long)]
    pub dequantize: bool,
    /// Scales of qlora-rs double-quantized tensors (--dequantize and migration): the
    /// 8-bit scales as stored, which qlora-rs's own decode uses, or the exact f32 scales
    /// (only qlora-rs 1.0 files keep them).
    #[arg(long, value_enum, ignore_case = true, default_value_t = QloraScales::Stored)]
    pub scales: QloraScales,
    /// Quantize tensors with NaN or infinite values instead of refusing.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
    /// Print one JSON document on stdout (schema qforge.quantize/2; with --dequantize
    /// qforge.export-native-dequantize/1; see docs/export-native-json.md).
    #[arg(long)]
    pub json: bool,
}

/// `qforge kv-profile` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvProfileCommand {
    /// Build a KV-cache compression profile (JSON).
    #[command(after_long_help = EXAMPLES_KV_BUILD)]
    Build(KvBuildArgs),
    /// Verify a profile on evaluation KV and write a receipt (exit 3 when over budget).
    #[command(after_long_help = EXAMPLES_KV_VERIFY)]
    Verify(KvVerifyArgs),
    /// Run a model on a text and write its post-RoPE keys, values and queries (safetensors).
    #[command(after_long_help = EXAMPLES_KV_CAPTURE)]
    Capture(KvCaptureArgs),
}

/// Arguments of `qforge kv-profile capture`.
#[derive(Debug, Args)]
pub struct KvCaptureArgs {
    /// Hugging Face folder (config.json + safetensors) or GGUF file (llama, mistral, qwen2).
    #[arg(long, value_name = "DIR|FILE")]
    pub model: PathBuf,
    /// tokenizer.json (default: beside the model).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Text file to run.
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Tokens of the text to run (its first N).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub tokens: usize,
    /// Queries kept per head (the last positions).
    #[arg(long, value_name = "Q", default_value_t = 64)]
    pub queries: usize,
    /// Output KV file (layer.{i}.key / value / query).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout (schema qforge.kv-capture/1, see docs/kv-profile.md).
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, value_enum, ignore_case = true, default_value_t = KvCodecKind::Fibquant)]
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
    #[arg(long, value_enum, ignore_case = true, default_value_t = KvRoleArg::Both)]
    pub role: KvRoleArg,
    /// Keys were captured before RoPE (default: after, as a KV cache holds them).
    #[arg(long)]
    pub pre_rope: bool,
    /// Store each row's norm divided by its cosine with its codewords, so that dot
    /// products with decoded rows are not shrunk (docs/kv-profile.md §1).
    #[arg(long)]
    pub unbiased_norm: bool,
    /// Learn each channel map in its own basis: keys weighted by the calibration queries'
    /// second moment, values by the identity (docs/kv-profile.md §5a).
    #[arg(long)]
    pub channel_basis: bool,
    /// Bits of each row's norm: 16 (fp16) or 8 (log scale near 1; needs channel maps for
    /// every coded role, docs/kv-profile.md §1).
    #[arg(long, default_value_t = 16)]
    pub norm_bits: u32,
    /// Extra codecs (tiers) as BLOCK_DIMxBITS, e.g. `2x12` (k = 2, N = 4096); tier i is codec
    /// i of --key-codecs / --value-codecs (0 is --block-dim/--bits), with its own codebook
    /// trained on the calibration rows of the streams it codes (docs/kv-profile.md §5b).
    #[arg(long, value_name = "KxBITS")]
    pub tier: Vec<String>,
    /// Codec of each layer's keys (comma-separated, one per layer, or one for all); needs --tier.
    #[arg(long, value_delimiter = ',', value_name = "I")]
    pub key_codecs: Vec<usize>,
    /// Codec of each layer's values (comma-separated, one per layer, or one for all); needs --tier.
    #[arg(long, value_delimiter = ',', value_name = "I")]
    pub value_codecs: Vec<usize>,
    /// Tokens per page.
    #[arg(long, default_value_t = 256)]
    pub tokens_per_page: usize,
    /// Keep the first N tokens of every head raw (attention sinks).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub protect_first: usize,
    /// Keep the last N tokens of every head raw: the cache's recent window (`verify --model`
    /// reads each query's newest N tokens from the fp16 cache; counted at 16 bits).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub protect_last: usize,
    /// Keep these layers raw (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "L")]
    pub protect_layers: Vec<usize>,
    /// Keep these KV heads raw in every layer (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "H")]
    pub protect_heads: Vec<usize>,
    /// What to do with a page that cannot be encoded.
    #[arg(long, value_enum, ignore_case = true, default_value_t = KvFallback::KeepRaw)]
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
    /// Budget: maximum perplexity increase with the encoded cache (verify --model).
    #[arg(long, value_name = "X")]
    pub max_perplexity_delta: Option<f64>,
    /// Axis policy: per-channel maps of keys (role-aware) or of keys and values
    /// (per-channel) are learned from --calibration.
    #[arg(long, value_enum, ignore_case = true, default_value_t = KvAxisArg::PerToken)]
    pub axis: KvAxisArg,
    /// Output profile.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
    /// Worker threads (default: all cores). The profile does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout (schema qforge.kv-build/1, see docs/kv-profile.md).
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

/// Axis policy of a KV profile (fib-quant's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvAxisArg {
    /// Nothing compressed.
    Raw,
    /// Token vectors as they are.
    PerToken,
    /// Keys and values normalized per channel (learned from calibration), coded per token.
    PerChannel,
    /// Keys per channel, values per token.
    RoleAware,
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
    /// The profiles to verify. Several are measured on one evaluation (one run of --model,
    /// its fp16 pass shared); --json then prints qforge.kv-receipts/1, their receipts in order.
    #[arg(required = true, value_name = "PROFILE")]
    pub profile: Vec<PathBuf>,
    /// Evaluation KV (safetensors); deterministic synthetic KV of the profile's shape when absent.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub eval: Option<PathBuf>,
    /// Run this model (Hugging Face folder or GGUF) on --text: attention metrics on its KV,
    /// and perplexity with the fp16 cache against the encoded cache.
    #[arg(long, value_name = "DIR|FILE", requires = "text")]
    pub model: Option<PathBuf>,
    /// tokenizer.json of --model (default: beside it).
    #[arg(long, value_name = "FILE", requires = "model")]
    pub tokenizer: Option<PathBuf>,
    /// Evaluation text for --model.
    #[arg(long, value_name = "FILE", requires = "model")]
    pub text: Option<PathBuf>,
    /// Tokens of --text to run.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub tokens: usize,
    /// Queries per head (last positions) for the attention metrics of --model.
    #[arg(long = "model-queries", value_name = "Q", default_value_t = 64)]
    pub model_queries: usize,
    /// Perplexity over this many consecutive chunks of --tokens tokens of --text, as
    /// llama-perplexity --chunks scores them (the attention metrics use the first chunk).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "model")]
    pub chunks: usize,
    /// Queries (safetensors, layer.{i}.query, [query_heads, n, head_dim]); required with --eval.
    #[arg(long, value_name = "FILE", requires = "eval")]
    pub queries: Option<PathBuf>,
    /// Also measure the baselines next to the (first) profile: TurboQuant-style, KIVI (group
    /// 32, and the group size nearest the profile's bits from above), q8_0, q4_0.
    #[arg(long)]
    pub compare: bool,
    /// Receipt output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
    /// Worker threads (default: all cores). The receipt does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the receipt JSON on stdout (schema qforge.kv-receipt/1, see docs/kv-profile.md).
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
    #[arg(long, value_name = "N")]
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
    /// Strategies to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        ignore_case = true,
        value_parser = NameOf::<Backend>::new("backend"),
        default_value = "fused,lazy-dequant,eager-dequant,candle,llamacpp"
    )]
    pub backends: Vec<String>,
    /// The llama.cpp peer program (tools/ggml-peer/make.sh builds it) for the llamacpp
    /// strategy; without it QFORGE_GGML_PEER, else the peer is reported as skipped.
    #[arg(long, value_name = "PATH")]
    pub llamacpp_peer: Option<PathBuf>,
    /// Instruction set of the kernels (default: the best this CPU has, or QFORGE_ISA; fused:
    /// avx512 runs VNNI where the CPU has it).
    #[arg(long, value_enum, ignore_case = true, default_value_t = IsaChoice::Auto)]
    pub isa: IsaChoice,
    /// Where to run: cpu (the --backends strategies) or cuda (qforge's CUDA kernels on GPU 0;
    /// needs an NVIDIA driver, and no CUDA toolkit).
    #[arg(long, value_enum, ignore_case = true, default_value_t = crate::kernels::bench::Device::Cpu)]
    pub device: crate::kernels::bench::Device,
    /// Print one JSON document on stdout (schema qforge.bench-gemm/2, see
    /// docs/bench-gemm-json.md).
    #[arg(long)]
    pub json: bool,
}

/// A `bench-gemm --backends` strategy (names as in [`crate::kernels::BACKENDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// qforge's fused dequant-dot kernels.
    Fused,
    /// Dequantize a tile of rows at a time, then f32 GEMM.
    LazyDequant,
    /// Dequantize the whole matrix once, then f32 GEMM.
    EagerDequant,
    /// candle's CPU QMatMul.
    Candle,
    /// llama.cpp's ggml CPU matmul (repacked and plain buffers), through tools/ggml-peer.
    Llamacpp,
}

/// A name `quantize -t` takes: every llama-quantize type or mix qforge implements (its
/// aliases `Q3_K`, `Q4_K`, `Q5_K` included), in llama-quantize's order, then NF4 and FP4.
/// The list comes from [`QUANT_OPTIONS`] and [`crate::quant::mix::Mix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName(pub &'static str);

/// The 4-bit bitsandbytes types, for `--format bnb-safetensors` and `--format qnat`.
const FOUR_BIT_TYPES: [(&str, &str); 2] = [
    (
        "NF4",
        "bitsandbytes NormalFloat4 (--format bnb-safetensors or qnat)",
    ),
    ("FP4", "bitsandbytes FP4 (--format bnb-safetensors or qnat)"),
];

/// Why `quantize -t 8` fails (after `--type: "8" is a number: `).
const TYPE_NAMES_ONLY: &str = "type names only (Q5_0, not llama-quantize's numeric id 8); \
     `qforge quantize --list-types` lists them";

impl TypeName {
    /// Every accepted name.
    pub fn all() -> &'static [TypeName] {
        static ALL: OnceLock<Vec<TypeName>> = OnceLock::new();
        ALL.get_or_init(|| {
            QUANT_OPTIONS
                .iter()
                .filter(|o| o.mix().is_some())
                .map(|o| TypeName(o.name))
                .chain(FOUR_BIT_TYPES.iter().map(|(n, _)| TypeName(n)))
                .collect()
        })
    }

    fn help(self) -> String {
        if let Some((_, help)) = FOUR_BIT_TYPES.iter().find(|(n, _)| *n == self.0) {
            return help.to_string();
        }
        match QUANT_OPTIONS.iter().find(|o| o.name == self.0) {
            Some(o) => match (o.alias_of(), o.base) {
                (Some(target), Some(base)) => {
                    format!("alias for {target} (with --format qnat: plain {base})")
                }
                (None, Some(base)) => format!("base {base}; {}", o.description.trim()),
                _ => o.description.trim().to_string(),
            },
            None => String::new(),
        }
    }
}

impl ValueEnum for TypeName {
    fn value_variants<'a>() -> &'a [Self] {
        TypeName::all()
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0).help(self.help()))
    }
}

/// A value parser for a closed set of names (the [`ValueEnum`] `E`): it lists them in
/// `--help` and completions, matches case-insensitively where the argument says
/// `ignore_case`, and yields the canonical name. Commands keep taking the name as a
/// string, so every spelling they accepted keeps its meaning. A value outside the set
/// fails with one line (`--type: unknown type "Q9_X"; one of: ...`).
pub struct NameOf<E> {
    /// What a value is, for the error line (`type`, `backend`).
    what: &'static str,
    /// The error line for an all-digits value, where numbers are a known trap.
    names_only: Option<&'static str>,
    kind: PhantomData<fn() -> E>,
}

impl<E> Clone for NameOf<E> {
    fn clone(&self) -> Self {
        NameOf {
            what: self.what,
            names_only: self.names_only,
            kind: PhantomData,
        }
    }
}

impl<E: ValueEnum + Send + Sync + 'static> NameOf<E> {
    /// Any of `E`'s names; `what` names a value in the error line.
    pub fn new(what: &'static str) -> Self {
        NameOf {
            what,
            names_only: None,
            kind: PhantomData,
        }
    }

    /// Any of `E`'s names; an all-digits value fails with `message`.
    pub fn names_only(what: &'static str, message: &'static str) -> Self {
        NameOf {
            what,
            names_only: Some(message),
            kind: PhantomData,
        }
    }
}

impl<E: ValueEnum + Send + Sync + 'static> TypedValueParser for NameOf<E> {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let flag = arg
            .and_then(clap::Arg::get_long)
            .map(|l| format!("--{l}: "))
            .unwrap_or_default();
        if let Some(message) = self.names_only {
            let v = value.to_string_lossy();
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(clap::Error::raw(
                    ErrorKind::InvalidValue,
                    format!("{flag}{v:?} is a number: {message}\n"),
                ));
            }
        }
        let parsed = EnumValueParser::<E>::new()
            .parse_ref(cmd, arg, value)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidValue => {
                    let names: Vec<String> = E::value_variants()
                        .iter()
                        .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
                        .collect();
                    clap::Error::raw(
                        ErrorKind::InvalidValue,
                        format!(
                            "{flag}unknown {} {:?}; one of: {}\n",
                            self.what,
                            value.to_string_lossy(),
                            names.join(", ")
                        ),
                    )
                }
                _ => e,
            })?;
        let name = parsed
            .to_possible_value()
            .expect("value_variants are not skipped");
        Ok(name.get_name().to_string())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// What an output path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A file (written to a temporary file, then renamed).
    File,
    /// A folder (`quantize --format bnb-safetensors`).
    Folder,
}

impl Cli {
    /// The paths this command line writes, with what each must be.
    pub fn outputs(&self) -> Vec<(&Path, OutputKind)> {
        use OutputKind::{File, Folder};
        match &self.command {
            Command::Quantize(a) if a.dry_run || a.list_types => Vec::new(),
            Command::Quantize(a) => {
                let kind = match a.format {
                    OutputFormat::BnbSafetensors => Folder,
                    OutputFormat::Gguf | OutputFormat::Qnat => File,
                };
                a.output.iter().map(|p| (p.as_path(), kind)).collect()
            }
            Command::ExportNative(a) => vec![(a.output.as_path(), File)],
            Command::KvProfile(KvProfileCommand::Build(a)) => vec![(a.output.as_path(), File)],
            Command::KvProfile(KvProfileCommand::Capture(a)) => vec![(a.output.as_path(), File)],
            Command::KvProfile(KvProfileCommand::Verify(a)) => {
                a.output.iter().map(|p| (p.as_path(), File)).collect()
            }
            Command::Inspect(_) | Command::BenchGemm(_) => Vec::new(),
        }
    }

    /// Checks every output path before any work is done (see
    /// [`crate::output::check_output_path`]).
    pub fn check_outputs(&self) -> anyhow::Result<()> {
        for (path, kind) in self.outputs() {
            crate::output::check_output_path(path, kind == OutputKind::Folder)?;
        }
        Ok(())
    }
}

const EXAMPLES_KV_CAPTURE: &str = "\
Examples:
  qforge kv-profile capture --model SmolLM2-135M-Instruct --text calib.txt --tokens 1024 -o calib.safetensors
  qforge kv-profile capture --model model.gguf --tokenizer tokenizer.json --text eval.txt -o eval.safetensors";

const EXAMPLES_QFORGE: &str = "\
Examples:
  qforge quantize model.safetensors -o model-Q4_K_M.gguf -t Q4_K_M
  qforge inspect model-Q4_K_M.gguf --tensors
  qforge export-native model.safetensors -o model.qnat --scheme nf4 --double-quant
  qforge kv-profile build --from-model model.gguf --bits 8 -o kv.json
  qforge bench-gemm --type q4_k --m 1,8 --json";

const USAGE_QUANTIZE: &str = "\
qforge quantize [OPTIONS] INPUT -o OUTPUT [-t TYPE] [--threads N]
       qforge quantize [OPTIONS] INPUT [OUTPUT] TYPE [NTHREADS]   (llama-quantize's form)
       qforge quantize --list-types";

const EXAMPLES_QUANTIZE: &str = "\
Examples:
  # A llama.cpp mix, bit-exact with llama-quantize:
  qforge quantize model.safetensors -o model-Q4_K_M.gguf -t Q4_K_M
  # From an F16 GGUF with an importance matrix, the output tensor at Q8_0:
  qforge quantize model-f16.gguf -o model-Q3_K_M.gguf -t q3_k_m --imatrix imatrix.gguf \\
      --output-tensor-type q8_0
  # llama-quantize's command line as is (flags, then INPUT [OUTPUT] TYPE [NTHREADS]);
  # a word after INPUT selects this form, and -o/-t/--threads are then refused:
  qforge quantize --imatrix imatrix.gguf model-f16.gguf model-Q4_K_M.gguf Q4_K_M 8
  qforge quantize model-f16.gguf 15        # ftype 15 = Q4_K: ./ggml-model-Q4_K.gguf
  # A split model (the first file brings the others), split the same way:
  qforge quantize --keep-split model-00001-of-00003.gguf out.gguf Q4_K_M
  # Layers 3 and 7 removed, a metadata key set:
  qforge quantize m.gguf -o m-pruned.gguf -t Q4_0 --prune-layers 3,7 --override-kv general.name=str:small
  # The plan only (types, sizes), as JSON:
  qforge quantize model.safetensors -t Q5_K_M --dry-run --json
  # A bitsandbytes 4-bit folder that transformers loads:
  qforge quantize model/ -o model-nf4/ --format bnb-safetensors -t NF4 --double-quant
  # Every type llama-quantize knows, and which qforge implements:
  qforge quantize --list-types";

impl QuantizeArgs {
    /// Turns llama-quantize's positional form (`INPUT [OUTPUT] TYPE [NTHREADS]`, see
    /// [`QuantizeArgs::positional`]) into `output`, `qtype` and `threads`, as
    /// llama-quantize reads it: the word after INPUT is TYPE when it names a type (a name
    /// in any case, or an ftype number), else OUTPUT; without OUTPUT the file is
    /// `DIR/ggml-model-TYPE.gguf` (no `.gguf` with `--keep-split`) beside the input, none
    /// with `--dry-run`; NTHREADS 0 or below means all cores. Nothing to do without
    /// positional words.
    pub fn resolve_positional(&mut self) -> anyhow::Result<()> {
        use crate::{bail_invalid, invalid};
        if self.positional.is_empty() {
            return Ok(());
        }
        if self.output.is_some() || self.qtype.is_some() || self.threads.is_some() {
            bail_invalid!("give OUTPUT TYPE NTHREADS either after INPUT (llama-quantize's form) or with -o/-t/--threads, not both");
        }
        if self.format != OutputFormat::Gguf {
            bail_invalid!(
                "llama-quantize's positional form writes GGUF; use -o and -t with --format"
            );
        }
        let words = &self.positional;
        let (output, qtype, rest) = match llama_ftype(&words[0]) {
            Some(name) => {
                let out = (!self.dry_run).then(|| {
                    let input = self.input.to_string_lossy();
                    let dir = input.rfind(['/', '\\']).map_or("", |i| &input[..=i]);
                    let ext = if self.keep_split { "" } else { ".gguf" };
                    PathBuf::from(format!("{dir}ggml-model-{name}{ext}"))
                });
                (out, name, &words[1..])
            }
            None => {
                let ty = words
                    .get(1)
                    .ok_or_else(|| invalid!("missing TYPE after OUTPUT {:?}", words[0]))?;
                let name = llama_ftype(ty).ok_or_else(|| {
                    invalid!("invalid TYPE {ty:?}: not a name or ftype number of llama-quantize's list (qforge quantize --list-types)")
                })?;
                (Some(PathBuf::from(&words[0])), name, &words[2..])
            }
        };
        if let Some(n) = rest.first() {
            let n: i64 = n
                .parse()
                .map_err(|_| invalid!("invalid NTHREADS {n:?}: expected a number"))?;
            self.threads = usize::try_from(n).ok().filter(|&n| n > 0);
        }
        if rest.len() > 1 {
            bail_invalid!("unexpected argument {:?} after NTHREADS", rest[1]);
        }
        self.output = output;
        self.qtype = Some(qtype.to_string());
        Ok(())
    }
}

/// llama-quantize's `try_parse_ftype`: a name of its list (any case) or an ftype number
/// (the first entry with that number: 12 is `Q3_K`, 0 is `F32`), as its canonical name.
fn llama_ftype(word: &str) -> Option<&'static str> {
    let by_name = QUANT_OPTIONS
        .iter()
        .find(|o| o.name.eq_ignore_ascii_case(word));
    let by_number = || {
        let n: u32 = word.parse().ok()?;
        QUANT_OPTIONS.iter().find(|o| o.ftype == n)
    };
    by_name.or_else(by_number).map(|o| o.name)
}

const EXAMPLES_EXPORT_NATIVE: &str = "\
Examples:
  qforge export-native model.safetensors -o model.qnat --scheme nf4 --double-quant
  qforge export-native model.gguf -o model.qnat --scheme q6_k --threads 8
  # Back to f32 safetensors:
  qforge export-native model.qnat --dequantize -o model-f32.safetensors
  # A qlora-rs QNAT file (its v1 or its version 2) is migrated to v2, or read back:
  qforge export-native old.qnat -o new.qnat
  qforge export-native old.qnat --dequantize --scales exact -o old-f32.safetensors";

const EXAMPLES_INSPECT: &str = "\
Examples:
  qforge inspect model.gguf
  qforge inspect model/ --tensors --filter 'layers\\.0\\.'
  qforge inspect model.qnat --verify
  qforge inspect model.safetensors.index.json --json | jq .totals";

const EXAMPLES_KV_PROFILE: &str = "\
Examples:
  qforge kv-profile build --shape layers=32,kv_heads=8,query_heads=32,head_dim=128,tokens=4096 \\
      --bits 8 -o kv.json
  qforge kv-profile verify kv.json --compare -o receipt.json";

const EXAMPLES_KV_BUILD: &str = "\
Examples:
  qforge kv-profile build --shape layers=32,kv_heads=8,query_heads=32,head_dim=128,tokens=4096 \\
      --bits 8 -o kv.json
  qforge kv-profile build --from-model model.gguf --calibration kv.safetensors \\
      --codec turboquant --bits 4 --block-dim 1 --protect-first 4 -o kv.json
  qforge kv-profile build --from-model config.json --bits 8 --max-attention-tv 0.05 -o kv.json";

const EXAMPLES_KV_VERIFY: &str = "\
Examples:
  qforge kv-profile verify kv.json -o receipt.json
  qforge kv-profile verify kv.json --eval kv-eval.safetensors --queries q.safetensors --json
  # Three seeds on one model run (its fp16 pass once), baselines next to the first:
  qforge kv-profile verify s0.json s1.json s2.json --model SmolLM2 --text t.txt --chunks 8 --compare
  # Exit code 3 when a budget of the profile is exceeded:
  qforge kv-profile verify kv.json --compare -q || echo over budget";

const EXAMPLES_BENCH_GEMM: &str = "\
Examples:
  qforge bench-gemm
  qforge bench-gemm --type q6_k --m 1,8,512 --k 4096 --n 14336 --threads 16
  qforge bench-gemm --weights model.gguf --tensor blk.0.ffn_down.weight --backends fused,candle
  qforge bench-gemm --type nf4 --reps 15 --json > bench.json";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn backend_names_are_the_kernel_backends() {
        let names: Vec<String> = Backend::value_variants()
            .iter()
            .map(|b| b.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, crate::kernels::BACKENDS);
    }

    #[test]
    fn type_names_are_the_mixes_their_aliases_and_four_bit() {
        let names: Vec<&str> = TypeName::all().iter().map(|t| t.0).collect();
        for m in crate::quant::mix::Mix::ALL {
            assert!(names.contains(&m.name()), "{m}");
        }
        for n in ["Q3_K", "Q4_K", "Q5_K", "NF4", "FP4"] {
            assert!(names.contains(&n), "{n}");
        }
        assert_eq!(names.len(), crate::quant::mix::Mix::ALL.len() + 5);
    }

    #[test]
    fn type_names_parse_case_insensitively_and_numbers_are_refused() {
        let parse = |v: &str| Cli::try_parse_from(["qforge", "quantize", "in", "-o", "x", "-t", v]);
        let qtype = |v: &str| match parse(v).unwrap().command {
            Command::Quantize(a) => a.qtype.unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(qtype("q4_k_m"), "Q4_K_M");
        assert_eq!(qtype("Nf4"), "NF4");
        assert_eq!(qtype("q4_k"), "Q4_K");
        let err = parse("8").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("names only"), "{err}");
        let err = parse("Q4_K_X").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let line = err.to_string();
        assert!(
            line.starts_with(
                "error: --type: unknown type \"Q4_K_X\"; one of: Q1_0, Q2_0, Q4_0, Q4_1,"
            ),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}

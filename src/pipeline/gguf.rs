//! The GGUF quantize pipeline (`quantize --format gguf`): model facts, per-tensor plan,
//! output metadata, layout, then tensors encoded in parallel chunks and streamed, in
//! order, into a temporary file renamed over the output on success.
//!
//! [`quantize`] does all of it for an input file whose tensors keep their names.
//! [`quantize_tensors`] is the same pipeline over a caller's list of [`OutputTensor`]s
//! and metadata, for a converter that renames tensors and writes its own header.

use super::encode::GgmlEncoder;
use super::llama_file::{self, FileOptions};
use super::report::{check_finite, Report, TensorReport};
use super::{ErrorStats, RunOptions};
use crate::formats::atomic::{AtomicFile, Mode};
use crate::formats::ggml_type::GgmlType;
use crate::formats::gguf::split;
use crate::formats::gguf::writer::{GgufLayout, GgufStream, TensorSpec};
use crate::formats::gguf::{Arrays, Value};
use crate::formats::{Format, TensorInfo, TensorSource};
use crate::model::ModelConfig;
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::{self, Mix, ModelFacts, Planner};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use regex::Regex;
use std::path::Path;

/// `general.quantization_version` written by current llama.cpp (`GGML_QNT_VERSION`).
pub const QNT_VERSION: u32 = 2;

/// What to quantize and how (`qforge quantize` with `--format gguf`).
#[derive(Debug, Clone)]
pub struct GgufJob<'a> {
    /// Input as the user gave it.
    pub input: &'a Path,
    /// Output file (required unless `dry_run`).
    pub output: Option<&'a Path>,
    /// Plan and sizes only; nothing is written.
    pub dry_run: bool,
    /// The mix (or plain type).
    pub mix: Mix,
    /// llama-quantize's type options (`has_imatrix` is set from `imatrix`).
    pub opts: mix::Options,
    /// Importance matrix file, with the `--include-weights` / `--exclude-weights` filters.
    pub imatrix: Option<(&'a Path, &'a [Regex], &'a [Regex])>,
    /// Re-quantize tensors that are already quantized.
    pub allow_requantize: bool,
    /// `--override-kv`, `--prune-layers`, `--keep-split`.
    pub file: FileOptions,
    /// Threads, progress bar, non-finite inputs.
    pub run: RunOptions,
}

/// One tensor of the output: its name in the GGUF and the source tensor holding its data.
#[derive(Debug, Clone)]
pub struct OutputTensor<'a> {
    /// Output name (also the name the mix rules and the importance matrix see).
    pub name: String,
    /// The source tensor, whose shape and type the output has before encoding.
    pub source: &'a TensorInfo,
}

impl<'a> OutputTensor<'a> {
    /// Every tensor of `src` under its own name, in file order.
    pub fn identity(src: &'a TensorSource) -> Vec<OutputTensor<'a>> {
        src.tensors
            .iter()
            .map(|t| OutputTensor {
                name: t.name.clone(),
                source: t,
            })
            .collect()
    }
}

/// One planned output tensor.
#[derive(Debug, Clone)]
pub struct Planned<'a> {
    /// The output tensor.
    pub tensor: OutputTensor<'a>,
    /// Output type.
    pub out: GgmlType,
    /// Whether it is encoded (otherwise copied byte for byte).
    pub encode: bool,
    /// Why this output type.
    pub reason: String,
    /// Importance weights for the encoder.
    pub imatrix: Option<&'a [f32]>,
}

/// Model facts the mix rules need, from the model's config.
pub fn model_facts(cfg: &ModelConfig) -> ModelFacts {
    let num = |v: Option<u64>| v.unwrap_or(0) as u32;
    ModelFacts {
        arch: cfg.arch.clone().unwrap_or_default(),
        n_layer: num(cfg.n_layer),
        n_head: num(cfg.n_head),
        // Absent means as many as query heads (the mix rules read 0 the same way).
        n_head_kv: num(cfg.n_head_kv.or(cfg.n_head)),
        n_expert: num(cfg.n_expert),
        ..ModelFacts::default()
    }
}

/// Output metadata: the GGUF input's keys (`input`, the metadata of `src` moved out of it:
/// its tokenizer arrays, most of a file's metadata, are not copied), or for other inputs a
/// minimal llama.cpp header (`general.architecture` = `arch`, `general.name`), as
/// llama-quantize writes them ([`llama_file::output_metadata`]: file type and quantization
/// version set, `split.*` removed, `overrides` and the pruned block count set).
pub fn output_metadata(
    src: &TensorSource,
    input: Vec<(String, Value)>,
    arch: &str,
    file_type: u32,
    overrides: &[(String, Value)],
    block_count: Option<u32>,
) -> Vec<(String, Value)> {
    let input = match src.format {
        Format::Gguf => input,
        Format::Safetensors | Format::Qnat => {
            let arch = if arch.is_empty() { "unknown" } else { arch };
            let name = src
                .path
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .replace(".safetensors", "")
                        .replace(".qnat", "")
                })
                .unwrap_or_default();
            vec![
                ("general.architecture".into(), Value::string(arch)),
                ("general.name".into(), Value::string(&name)),
            ]
        }
    };
    let gguf_arch = input
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str().map(|s| s.into_owned()))
        .unwrap_or_else(|| arch.to_string());
    llama_file::output_metadata(
        input,
        file_type,
        overrides,
        block_count.map(|n| (gguf_arch.as_str(), n)),
    )
}

/// Runs the whole pipeline on `job.input` (a split GGUF is read with its other files);
/// tensors keep their names unless layers are pruned. Invalid input when an output is an
/// input file. For a GGUF input the mix rules see the `--override-kv` values of the
/// hyperparameters, as llama-quantize's do ([`llama_file::loader_metadata`]).
pub fn quantize(job: &GgufJob<'_>) -> Result<Report> {
    // The metadata's arrays (the tokenizer's) are only written back: kept as their bytes.
    let mut src = split::open_model(job.input, Arrays::Raw)?;
    let imatrix = load_imatrix(job.imatrix)?;
    // llama-quantize reads the hyperparameters through its loader, which applies
    // --override-kv: the mix rules see the overridden values.
    let config = match src.format {
        Format::Gguf => ModelConfig::from_gguf(
            &llama_file::loader_metadata(&src.metadata, &job.file.kv_overrides),
            Some(&src.path),
        ),
        _ => ModelConfig::for_source(&src)?,
    };
    let facts = model_facts(&config);
    let mut overrides = job.file.kv_overrides.clone();
    if let (Some(m), Some((path, _, _))) = (&imatrix, job.imatrix) {
        overrides.extend(llama_file::imatrix_keys(path, m));
    }
    let file_type = match job.mix {
        Mix::COPY => copy_file_type(&src)?,
        m => m.file_type(),
    };
    // Moved, not copied: nothing after this reads the input's metadata.
    let input_meta = std::mem::take(&mut src.metadata);
    let (tensors, block_count) =
        llama_file::arrange(&src, &job.file.prune_layers, job.file.keep_split);
    let meta = output_metadata(
        &src,
        input_meta,
        &facts.arch,
        file_type,
        &overrides,
        block_count,
    );
    quantize_tensors(&src, &tensors, facts, meta, imatrix.as_ref(), job)
}

/// The file type `COPY` writes: the input's (llama.cpp's loader: `general.file_type`,
/// which must be a u32, else its guess from the tensor types).
fn copy_file_type(src: &TensorSource) -> Result<u32> {
    let key = match src.metadata.iter().find(|(k, _)| k == "general.file_type") {
        None => None,
        Some((_, Value::U32(v))) => Some(*v),
        Some((_, v)) => bail_invalid!(
            "general.file_type is {:?}, not a u32 (llama.cpp refuses the file)",
            v.value_type()
        ),
    };
    let types = src
        .tensors
        .iter()
        .filter_map(|t| Some((t.name.as_str(), t.ty.as_ggml()?)));
    Ok(mix::input_file_type(key, types))
}

/// Whether two paths name the same existing file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The importance matrix of `--imatrix` with the `--include-weights`/`--exclude-weights`
/// filters applied; `None` when the filters leave no entry (llama-quantize then quantizes as
/// without one and writes no `quantize.imatrix.*` keys).
pub fn load_imatrix(spec: Option<(&Path, &[Regex], &[Regex])>) -> Result<Option<Imatrix>> {
    let Some((path, include, exclude)) = spec else {
        return Ok(None);
    };
    let mut m = Imatrix::load(path)?;
    m.filter(include, exclude);
    Ok((!m.entries.is_empty()).then_some(m))
}

/// Plans, lays out and (unless a dry run) writes `tensors` of `src` with metadata `meta`.
pub fn quantize_tensors(
    src: &TensorSource,
    tensors: &[OutputTensor<'_>],
    facts: ModelFacts,
    meta: Vec<(String, Value)>,
    imatrix: Option<&Imatrix>,
    job: &GgufJob<'_>,
) -> Result<Report> {
    let mut opts = job.opts.clone();
    opts.has_imatrix = imatrix.is_some();
    let planned = plan(tensors, job.mix, facts, opts, imatrix, job.allow_requantize)?;
    let keep_split = job.file.keep_split;
    let n_split = llama_file::split_count(tensors, keep_split)?;
    let metas = llama_file::split_metadata(meta, n_split, planned.len());
    let mut layouts = Vec::with_capacity(metas.len());
    let mut ranges = Vec::with_capacity(metas.len());
    let mut start = 0;
    for (i, meta) in metas.iter().enumerate() {
        let end = start
            + planned[start..]
                .iter()
                .take_while(|p| !keep_split || p.tensor.source.file == i)
                .count();
        let specs: Vec<TensorSpec> = planned[start..end]
            .iter()
            .map(|p| TensorSpec {
                name: p.tensor.name.clone(),
                ne: p.tensor.source.ne(),
                ty: p.out,
            })
            .collect();
        layouts.push(GgufLayout::new(meta, &specs)?);
        ranges.push(start..end);
        start = end;
    }
    // The layouts hold the serialized headers: the metadata is done with.
    drop(metas);
    let outputs = job
        .output
        .map(|o| llama_file::output_paths(o, keep_split, n_split));
    for out in outputs.iter().flatten() {
        if out.exists() && src.files.iter().any(|f| same_file(out, &f.path)) {
            bail_invalid!("output {} is an input file", out.display());
        }
    }
    let first_output = outputs.as_ref().map(|o| o[0].as_path());
    let mut report = Report::new(
        job.input,
        first_output,
        job.mix.name().to_string(),
        job.dry_run,
        job.run.threads,
    );
    let placed = layouts.iter().flat_map(|l| &l.tensors);
    for (p, &(_, bytes)) in planned.iter().zip(placed) {
        let row = TensorReport::new(
            p.tensor.source,
            &p.tensor.name,
            p.out.to_string(),
            bytes,
            p.reason.clone(),
        );
        report.push(if p.encode {
            row.encoded(None)
        } else {
            row.copied_unchanged()
        });
    }
    let file_size = layouts.iter().map(|l| l.file_size).sum();
    report.write_or_plan(
        job.dry_run,
        first_output,
        file_size,
        job.run.threads,
        |_| {
            let shards: Vec<Shard<'_, Planned<'_>>> = outputs
                .iter()
                .flatten()
                .zip(&layouts)
                .zip(&ranges)
                .map(|((path, layout), r)| Shard {
                    path,
                    layout,
                    tensors: &planned[r.clone()],
                })
                .collect();
            write(src, &shards, job.run)
        },
    )
}

/// Chooses each output tensor's type with llama.cpp's mix rules and checks that it can
/// be made (requantize permission, decoder, importance data).
pub fn plan<'a>(
    tensors: &[OutputTensor<'a>],
    mix: Mix,
    facts: ModelFacts,
    opts: mix::Options,
    imatrix: Option<&'a Imatrix>,
    allow_requantize: bool,
) -> Result<Vec<Planned<'a>>> {
    let shapes: Vec<(String, Vec<u64>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.source.ne()))
        .collect();
    let mut planner = Planner::new(mix, facts, opts, &shapes);
    let mut out = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        let (name, info) = (&tensor.name, tensor.source);
        let in_ty = info.ty.as_ggml().ok_or_else(|| {
            invalid!(
                "tensor {name}: {} tensors cannot be stored in GGUF",
                info.ty
            )
        })?;
        let choice = planner
            .try_choose(name, &info.ne())
            .map_err(|e| invalid!("{e}"))?;
        let out_ty = if choice.quantize { choice.ty } else { in_ty };
        let encode = out_ty != in_ty;
        if encode {
            if !in_ty.is_float() && !allow_requantize {
                bail_invalid!(
                    "tensor {name} is already {in_ty}; pass --allow-requantize to re-quantize it to {out_ty}"
                );
            }
            if !crate::quant::can_decode(info.ty) {
                bail_invalid!("tensor {name}: decoding {in_ty} is not implemented");
            }
        }
        let weights = match (encode, imatrix) {
            // By the input name: a renumbered block keeps its entries (remap_imatrix).
            (true, Some(m)) => m.entries.get(&info.name).map(Vec::as_slice),
            _ => None,
        };
        if encode && choice.requires_imatrix && weights.is_none() {
            bail_invalid!(
                "tensor {name}: {out_ty} needs importance-matrix data (as in llama.cpp); pass --imatrix with an entry for it"
            );
        }
        if let Some(w) = weights {
            let row = info.ne()[0] as usize;
            let matrices = (info.ne().iter().skip(2).product::<u64>()) as usize;
            if w.len() != row * matrices {
                bail_invalid!(
                    "imatrix entry {name} has {} values, tensor needs {} ({} columns x {} matrices)",
                    w.len(),
                    row * matrices,
                    row,
                    matrices
                );
            }
        }
        out.push(Planned {
            tensor: tensor.clone(),
            out: out_ty,
            encode,
            reason: choice.reason.to_string(),
            imatrix: weights,
        });
    }
    Ok(out)
}

/// Streams the planned tensors into their files (atomically, all committed at the end);
/// per-tensor statistics of the encoded ones (copied tensors have none: their error is
/// 0) and, with `run.digest`, the SHA-256 of the first file.
pub fn write(
    src: &TensorSource,
    shards: &[Shard<'_, Planned<'_>>],
    run: RunOptions,
) -> Result<Written> {
    let total: u64 = shards
        .iter()
        .flat_map(|s| s.tensors)
        .map(|p| p.tensor.source.elements())
        .sum();
    let (stats, digests) = stream_shards(shards, total, run, |p, bar, out| {
        let info = p.tensor.source;
        bar.set_message(p.tensor.name.clone());
        if !p.encode {
            out.copy(src, info)?;
            bar.inc(info.elements());
            return Ok(None);
        }
        let enc = GgmlEncoder::new(p.out)?;
        let s = super::encode_tensor(src, info, &enc, p.imatrix, bar, out)?.stats;
        check_finite(&p.tensor.name, Some(s), run.allow_nonfinite)?;
        Ok(Some(s))
    })?;
    Ok((stats, digests.into_iter().next().flatten()))
}

/// One output file: its path, layout and tensors.
pub struct Shard<'a, T> {
    /// Where it is written.
    pub path: &'a Path,
    /// Its header and tensor offsets.
    pub layout: &'a GgufLayout,
    /// Its tensors, in order.
    pub tensors: &'a [T],
}

/// Output chunks queued for the writer thread of [`stream_tensors`] (each at most a chunk
/// of the encoder, 8 MiB): the encoder runs ahead of the disk by this much.
const WRITES_IN_FLIGHT: usize = 2;

/// A piece of output for the writer thread: a buffer it takes (and hands back for reuse),
/// or consecutive tensors of input files, which it writes straight from their maps.
enum Piece<'m> {
    Owned(Vec<u8>),
    Copies(Vec<Copied<'m>>),
}

/// A tensor written unchanged: the input holding it and the tensor.
type Copied<'m> = (&'m TensorSource, &'m TensorInfo);

/// Consecutive output tensors copied unchanged from one input file in which they lie as
/// in the output: the same distances between their starts, zero bytes between them.
/// The writer copies them with one file-to-file copy, padding included.
struct CopyRun<'m> {
    src: &'m TensorSource,
    /// The first tensor (its name for the log).
    first: &'m TensorInfo,
    /// The input offset where the last tensor's data ends.
    end: u64,
    /// The first tensor's offset in the output's data section.
    out_start: u64,
    /// Tensors in the run.
    n: usize,
}

impl<'m> CopyRun<'m> {
    fn new(src: &'m TensorSource, t: &'m TensorInfo, out_offset: u64) -> Self {
        CopyRun {
            src,
            first: t,
            end: t.offset + t.bytes,
            out_start: out_offset,
            n: 1,
        }
    }

    /// Adds `t`, whose output offset is `out_offset`, when it continues the run.
    fn extend(&mut self, src: &'m TensorSource, t: &'m TensorInfo, out_offset: u64) -> bool {
        let joins = std::ptr::eq(src, self.src)
            && t.file == self.first.file
            && t.offset >= self.end
            && out_offset >= self.out_start
            && t.offset - self.first.offset == out_offset - self.out_start
            && src.files[t.file].data()[self.end as usize..t.offset as usize]
                .iter()
                .all(|&b| b == 0);
        if joins {
            self.end = t.offset + t.bytes;
            self.n += 1;
        }
        joins
    }

    /// Writes the run to `stream` straight from the input map ([`AtomicFile::copy_from`]).
    fn copy(self, stream: &mut GgufStream<'_, &mut AtomicFile>) -> Result<()> {
        let _timer = crate::logging::TensorTimer::start("copied", &self.first.name);
        tracing::debug!("copying {} tensors in one piece", self.n);
        let (input, offset) = self.src.file_range(self.first);
        stream.copy_tensors(self.n, |out, len| {
            if len != self.end - offset {
                return Err(std::io::Error::other(
                    "copied span does not match the layout",
                ));
            }
            out.copy_from(input, offset, len)
        })
    }
}

/// The [`super::Sink`] that [`stream_shards`] hands to each tensor: its pieces go, in
/// order, to the file's writer thread. Inputs live as long as `'m`, so tensors that are
/// copied unchanged ([`TensorWriter::copy`]) go to the file straight from the input file.
pub struct TensorWriter<'m> {
    tx: std::sync::mpsc::SyncSender<Piece<'m>>,
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Copies not yet sent: they go to the writer together, before the next buffer or at
    /// the end (one hand-over instead of one per tensor).
    copies: Vec<Copied<'m>>,
}

impl<'m> TensorWriter<'m> {
    fn put(&mut self, piece: Piece<'m>) -> Result<()> {
        // A send fails only when the writer stopped; its error is the one reported.
        self.tx
            .send(piece)
            .map_err(|_| anyhow::anyhow!("the output writer stopped"))
    }

    /// Writes tensor `t` of `src` unchanged: no decoding, no statistics; the writer thread
    /// writes it from the input map a piece at a time ([`AtomicFile::copy_from`]).
    pub fn copy(&mut self, src: &'m TensorSource, t: &'m TensorInfo) -> Result<()> {
        self.copies.push((src, t));
        Ok(())
    }

    /// Sends the copies queued by [`TensorWriter::copy`].
    fn send_copies(&mut self) -> Result<()> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let copies = std::mem::take(&mut self.copies);
        self.put(Piece::Copies(copies))
    }
}

impl super::Sink for TensorWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let mut buf = self.buffer();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.send(buf)
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    fn send(&mut self, buf: Vec<u8>) -> Result<()> {
        self.send_copies()?;
        self.put(Piece::Owned(buf))
    }
}

/// What a tensor callback of [`stream_shards`] is: `tensor(t, bar, out)` writes tensor
/// `t`'s bytes through `out` and returns its statistics (`None` when copied).
pub trait TensorFn<'m, T>:
    FnMut(&T, &ProgressBar, &mut TensorWriter<'m>) -> Result<Option<ErrorStats>>
{
}

impl<'m, T, F> TensorFn<'m, T> for F where
    F: FnMut(&T, &ProgressBar, &mut TensorWriter<'m>) -> Result<Option<ErrorStats>>
{
}

/// The GGUF writing loop shared by quantize and the converter: a progress bar over
/// `total_elements`, the layout's header, then `tensor(t, bar, out)` for each of
/// `tensors` in order, into an [`AtomicFile`] committed at the end. Returns the
/// per-tensor statistics and, with `run.digest`, the SHA-256 of the file.
///
/// The bytes are written (and hashed as they are written, with `run.digest`) by a writer
/// thread, in order, while the caller encodes the next chunks, at most
/// `WRITES_IN_FLIGHT` of them queued.
pub fn stream_tensors<'m, T>(
    out: &Path,
    layout: &GgufLayout,
    tensors: &[T],
    total_elements: u64,
    run: RunOptions,
    tensor: impl TensorFn<'m, T>,
) -> Result<Written> {
    let shard = Shard {
        path: out,
        layout,
        tensors,
    };
    let (stats, digests) = stream_shards(&[shard], total_elements, run, tensor)?;
    Ok((stats, digests.into_iter().next().flatten()))
}

/// Per-tensor statistics (in order) and the file's SHA-256 (with `--digest`).
pub type Written = (Vec<Option<ErrorStats>>, Option<[u8; 32]>);

/// Per-tensor statistics (in order) and each file's SHA-256 (with `--digest`).
pub type Streamed = (Vec<Option<ErrorStats>>, Vec<Option<[u8; 32]>>);

/// [`stream_tensors`] over several files (a split output): each is written in turn to its
/// temporary file, and all are renamed into place only once every one is complete.
/// Returns the per-tensor statistics in order and each file's SHA-256 (with `run.digest`).
pub fn stream_shards<'m, T>(
    shards: &[Shard<'_, T>],
    total_elements: u64,
    run: RunOptions,
    mut tensor: impl TensorFn<'m, T>,
) -> Result<Streamed> {
    let bar = super::progress_bar(total_elements, run.quiet);
    let mut files = Vec::with_capacity(shards.len());
    let mut stats = Vec::new();
    for shard in shards {
        let file = write_shard(shard, run.digest, &bar, &mut tensor, &mut stats)?;
        files.push((file, shard.path));
    }
    bar.finish_and_clear();
    let digests = files
        .into_iter()
        .map(|(file, path)| {
            let digest = if run.digest {
                file.commit().map(Some)
            } else {
                file.commit_unhashed().map(|()| None)
            };
            digest.with_context(|| format!("writing {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((stats, digests))
}

/// Writes one file of [`stream_shards`] (its tensors' statistics appended to `stats`)
/// through a writer thread, and returns it uncommitted.
fn write_shard<'m, T>(
    shard: &Shard<'_, T>,
    digest: bool,
    bar: &ProgressBar,
    tensor: &mut impl TensorFn<'m, T>,
    stats: &mut Vec<Option<ErrorStats>>,
) -> Result<AtomicFile> {
    // Not synced: see crate::formats::atomic (llama-quantize and cp do not sync either).
    let mode = Mode {
        hash: digest,
        sync: false,
    };
    let mut file = AtomicFile::create_with(shard.path, mode)?;
    let layout = shard.layout;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece<'m>>(WRITES_IN_FLIGHT);
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        let file = &mut file;
        let writer = scope.spawn(move || -> Result<_> {
            let mut stream = GgufStream::start(file, layout)?;
            let mut run: Option<CopyRun<'m>> = None;
            for piece in rx {
                match piece {
                    Piece::Owned(buf) => {
                        if let Some(r) = run.take() {
                            r.copy(&mut stream)?;
                        }
                        stream.write_data(&buf)?;
                        let _ = recycle.send(buf);
                    }
                    Piece::Copies(copies) => {
                        for (src, t) in copies {
                            let at = stream.next_tensor() + run.as_ref().map_or(0, |r| r.n);
                            let Some(&(out_offset, _)) = layout.tensors.get(at) else {
                                anyhow::bail!("more tensors than the layout has");
                            };
                            if let Some(r) = &mut run {
                                if r.extend(src, t, out_offset) {
                                    continue;
                                }
                                run.take().expect("a run").copy(&mut stream)?;
                            }
                            run = Some(CopyRun::new(src, t, out_offset));
                        }
                    }
                }
            }
            if let Some(r) = run {
                r.copy(&mut stream)?;
            }
            Ok(stream)
        });
        let mut out = TensorWriter {
            tx,
            recycled,
            copies: Vec::new(),
        };
        let produced = (|| -> Result<()> {
            for t in shard.tensors {
                stats.push(tensor(t, bar, &mut out)?);
            }
            out.send_copies()
        })();
        drop(out);
        let stream = match writer.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        produced?;
        stream.finish()?;
        Ok(())
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_default_kv_heads_to_query_heads() {
        let cfg = ModelConfig {
            arch: Some("llama".into()),
            n_layer: Some(2),
            n_head: Some(8),
            ..ModelConfig::default()
        };
        let f = model_facts(&cfg);
        assert_eq!(
            (f.arch.as_str(), f.n_layer, f.n_head, f.n_head_kv),
            ("llama", 2, 8, 8)
        );
        assert_eq!(model_facts(&ModelConfig::default()).n_layer, 0);
    }

    #[test]
    fn plan_uses_the_output_names() {
        let info = TensorInfo {
            name: "model.norm.weight".into(),
            ty: crate::formats::TensorType::Ggml(GgmlType::F32),
            shape: vec![256],
            file: 0,
            offset: 0,
            bytes: 1024,
        };
        let tensors = [OutputTensor {
            name: "output_norm.weight".into(),
            source: &info,
        }];
        let p = plan(
            &tensors,
            Mix::from_name("Q4_K_M").unwrap(),
            ModelFacts::default(),
            mix::Options::default(),
            None,
            false,
        )
        .unwrap();
        assert_eq!(p[0].tensor.name, "output_norm.weight");
        assert_eq!((p[0].out, p[0].encode), (GgmlType::F32, false));
    }
}

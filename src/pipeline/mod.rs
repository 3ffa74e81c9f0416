//! The conversion pipelines behind `quantize` and `export-native`: [`gguf`] (llama.cpp
//! GGUF), [`qnat`] (QNAT v2 export, v1 migration, dequantization), [`bnb`] (bitsandbytes
//! 4-bit folders), all reporting through the one [`report::Report`]; and the streaming
//! encoder they share.
//!
//! Tensors are processed one at a time, in output order. A tensor is cut into chunks of
//! whole units (rows for ggml types, blocks for NF4; a few MB of output per chunk); the
//! units of a chunk are decoded, encoded and measured in parallel with rayon, each into
//! its own slice of the chunk buffer, then the chunk is written. Peak memory is a chunk plus per-thread row buffers,
//! independent of model size, and the bytes do not depend on the thread count because
//! every unit is encoded independently and error sums are reduced in unit order.

pub mod bnb;
pub mod encode;
pub mod gguf;
pub mod llama_file;
pub mod qnat;
pub mod report;
pub mod stats;

use crate::formats::{TensorInfo, TensorSource};
use anyhow::{Context, Result};
use encode::RowEncoder;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Target output bytes per chunk.
const CHUNK_BYTES: usize = 8 << 20;

/// How a pipeline runs (not what it writes).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// No progress bar (JSON output).
    pub quiet: bool,
    /// Accept NaN/infinite inputs.
    pub allow_nonfinite: bool,
    /// Compute the output's SHA-256 while writing (`--digest`); otherwise none is.
    pub digest: bool,
}

/// Where a tensor's bytes go, in order: copies of slices ([`Sink::write`]), or buffers
/// handed over whole ([`Sink::buffer`], filled, then [`Sink::send`]) so that a writer on
/// another thread takes them without a copy. Any `FnMut(&[u8]) -> Result<()>` is a sink
/// that copies.
pub trait Sink {
    /// Writes `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// An empty buffer to fill and give to [`Sink::send`] (a recycled one when possible).
    fn buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// Writes the bytes of `buf`, taking it.
    fn send(&mut self, buf: Vec<u8>) -> Result<()> {
        self.write(&buf)
    }
}

impl<F: FnMut(&[u8]) -> Result<()>> Sink for F {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self(bytes)
    }
}

/// Error statistics of one encoded tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Sum over elements of (x - decode(encode(x)))^2.
    pub sum_sq_err: f64,
    /// Sum over elements of x^2.
    pub sum_sq: f64,
    /// Count of NaN or infinite input values.
    pub non_finite: u64,
}

impl ErrorStats {
    /// Relative RMSE `sqrt(sum_sq_err / sum_sq)` (0 for an all-zero tensor).
    pub fn rel_rmse(&self) -> f64 {
        if self.sum_sq > 0.0 {
            (self.sum_sq_err / self.sum_sq).sqrt()
        } else {
            self.sum_sq_err.sqrt()
        }
    }

    /// Adds another unit's sums.
    pub fn add(&mut self, o: &ErrorStats) {
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq += o.sum_sq;
        self.non_finite += o.non_finite;
    }
}

/// Streams a tensor's bytes unchanged to `write`, chunk by chunk, releasing each chunk
/// of the input map once written.
pub fn copy_tensor(src: &TensorSource, t: &TensorInfo, write: &mut dyn Sink) -> Result<()> {
    let _timer = crate::logging::TensorTimer::start("copied", &t.name);
    let mut done = 0u64;
    for chunk in src.data(t).chunks(CHUNK_BYTES) {
        write.write(chunk)?;
        src.release(t, done..done + chunk.len() as u64);
        done += chunk.len() as u64;
    }
    Ok(())
}

/// What [`encode_tensor`] produced besides the streamed bytes.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// Error statistics.
    pub stats: ErrorStats,
    /// Side values of every unit in order (`enc.side_len()` per unit; e.g. NF4 absmax).
    pub side: Vec<f32>,
}

/// Encodes tensor `t` unit by unit with `enc` and streams the bytes to `write`.
///
/// A unit is `enc.unit_len(row_len)` consecutive elements (a row for ggml types, a
/// block for NF4); the last unit may be shorter when the encoder allows it. `imatrix`,
/// when given, holds one weight per column for each matrix of a 3-D stack
/// (`len = row_len * n_matrices`); units must then be whole rows.
pub fn encode_tensor(
    src: &TensorSource,
    t: &TensorInfo,
    enc: &dyn RowEncoder,
    imatrix: Option<&[f32]>,
    progress: &ProgressBar,
    write: &mut dyn Sink,
) -> Result<Encoded> {
    let _timer = crate::logging::TensorTimer::start("encoded", &t.name);
    let elements = t.elements() as usize;
    let row_len = *t.shape.last().unwrap_or(&1) as usize;
    let unit = enc.unit_len(row_len).max(1);
    let in_ty =
        t.ty.as_ggml()
            .context("tensor type has no ggml equivalent")?;
    let in_block = in_ty.block_size() as usize;
    if !unit.is_multiple_of(in_block) && elements.div_ceil(unit) > 1 {
        anyhow::bail!(
            "tensor {}: units of {unit} elements do not hold whole {in_ty} blocks",
            t.name
        );
    }
    let in_bytes_of = |n: usize| n.div_ceil(in_block) * in_ty.type_size() as usize;
    let data = src.data(t);
    let fill = |first: usize, x: &mut [f32]| -> Result<()> {
        let start = in_bytes_of(first);
        crate::quant::decode(t.ty, &data[start..start + in_bytes_of(x.len())], x)
    };
    let mut released = 0u64;
    let mut consumed = |done: usize| {
        // The input of these units is done with: let its pages go.
        let end = in_bytes_of(done).min(data.len()) as u64;
        src.release(t, released..end);
        released = end;
    };
    encode_values(
        &t.name,
        &t.shape,
        &fill,
        enc,
        imatrix,
        progress,
        write,
        &mut consumed,
    )
}

/// [`encode_tensor`] over values that `fill(first, x)` supplies (elements
/// `first..first + x.len()` in row-major order, decoded and transformed), for a tensor
/// of `shape` named `name`; `consumed(n)` is told after each chunk that the first `n`
/// elements are done with.
#[allow(clippy::too_many_arguments)]
pub fn encode_values(
    name: &str,
    shape: &[u64],
    fill: &(dyn Fn(usize, &mut [f32]) -> Result<()> + Sync),
    enc: &dyn RowEncoder,
    imatrix: Option<&[f32]>,
    progress: &ProgressBar,
    write: &mut dyn Sink,
    consumed: &mut dyn FnMut(usize),
) -> Result<Encoded> {
    let elements = shape.iter().product::<u64>() as usize;
    let row_len = *shape.last().unwrap_or(&1) as usize;
    let unit = enc.unit_len(row_len).max(1);
    let units = elements.div_ceil(unit);
    let out_unit_bytes = enc.unit_bytes(unit)?;
    let side_len = enc.side_len();
    // Every unit gets a side slot (a dummy one when the encoder has no side values) so
    // the zip below pairs each output unit with its slot.
    let side_stride = side_len.max(1);
    let rows_per_matrix = shape
        .len()
        .checked_sub(2)
        .map_or(usize::MAX, |i| shape[i] as usize)
        .max(1);
    let chunk_units = (CHUNK_BYTES / out_unit_bytes.max(1)).clamp(1, units.max(1));
    let mut side_buf = vec![0f32; chunk_units * side_stride];
    let mut result = Encoded::default();
    let mut u0 = 0;
    while u0 < units {
        let n = chunk_units.min(units - u0);
        let last_len = (elements - (u0 + n - 1) * unit).min(unit);
        let out_len = (n - 1) * out_unit_bytes + enc.unit_bytes(last_len)?;
        // Zeroed: an encoder may OR bits into its output.
        let mut out = write.buffer();
        out.clear();
        out.resize(out_len, 0);
        let buf = &mut out[..];
        let sides = &mut side_buf[..n * side_stride];
        // Units go to the workers in groups of `stats::GROUP`, whose statistics are
        // computed side by side once encoded; the per-unit values are reduced in order.
        let stats: Vec<([ErrorStats; stats::GROUP], usize)> = buf
            .par_chunks_mut(out_unit_bytes * stats::GROUP)
            .zip(sides.par_chunks_mut(side_stride * stats::GROUP))
            .enumerate()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(xs, ys): &mut (Vec<f32>, Vec<f32>),
                 (gi, (dst, side))|
                 -> Result<([ErrorStats; stats::GROUP], usize)> {
                    let g0 = u0 + gi * stats::GROUP;
                    let k = (n - gi * stats::GROUP).min(stats::GROUP);
                    xs.resize(k * unit, 0.0);
                    ys.resize(k * unit, 0.0);
                    let mut lens = [0usize; stats::GROUP];
                    let units = dst
                        .chunks_mut(out_unit_bytes)
                        .zip(side.chunks_mut(side_stride))
                        .zip(xs.chunks_mut(unit).zip(ys.chunks_mut(unit)));
                    for (j, ((dst, side), (x, y))) in units.enumerate() {
                        let first = (g0 + j) * unit;
                        let len = unit.min(elements - first);
                        lens[j] = len;
                        let (x, y) = (&mut x[..len], &mut y[..len]);
                        fill(first, x)?;
                        let weights = imatrix.map(|w| {
                            let m = (first / row_len / rows_per_matrix) * row_len;
                            &w[m..m + row_len]
                        });
                        let side = &mut side[..side_len];
                        enc.encode(x, dst, side, weights);
                        enc.decode(dst, side, y);
                    }
                    let mut out = [ErrorStats::default(); stats::GROUP];
                    if k == stats::GROUP && lens.iter().all(|&l| l == unit) {
                        let x = std::array::from_fn(|j| &xs[j * unit..(j + 1) * unit]);
                        let y = std::array::from_fn(|j| &ys[j * unit..(j + 1) * unit]);
                        out = stats::group_stats(x, y);
                    } else {
                        for (j, o) in out.iter_mut().enumerate().take(k) {
                            let r = j * unit..j * unit + lens[j];
                            *o = stats::unit_stats(&xs[r.clone()], &ys[r]);
                        }
                    }
                    Ok((out, k))
                },
            )
            .collect::<Result<_>>()
            .with_context(|| format!("tensor {name}"))?;
        for (group, k) in &stats {
            for s in &group[..*k] {
                result.stats.add(s);
            }
        }
        if side_len > 0 {
            result.side.extend_from_slice(sides);
        }
        write.send(out)?;
        progress.inc(((n - 1) * unit + last_len) as u64);
        consumed(((u0 + n) * unit).min(elements));
        u0 += n;
    }
    Ok(result)
}

/// A progress bar over `total` elements on stderr; invisible unless stderr is a
/// terminal (indicatif hides itself), and always hidden when `hidden` or under `-q`.
pub fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden || crate::output::quiet() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg} ({eta})",
        )
        .expect("valid template"),
    );
    bar
}

/// Runs `f` on a rayon pool of `threads` workers (all cores when `None`).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            crate::bail_invalid!("--threads must be at least 1");
        }
        b = b.num_threads(n);
    }
    Ok(b.build()?.install(f))
}

//! CUDA dequant-GEMM: `y = x W^T` on an NVIDIA GPU with `W` kept in its stored layout
//! (GGUF blocks; bitsandbytes NF4 codes and f32 absmax). The kernels are
//! `kernels/cuda/qgemm.cu`, compiled to PTX on a machine with nvcc (`scripts/cuda-ptx.sh`);
//! the committed PTX is embedded and loaded by the driver at run time, so nothing CUDA is
//! needed to build qforge, and the driver library is opened only when a GPU is asked for
//! ([`Gpu::open`] probes for it first).
//!
//! GEMV kernels for `m <= 8` (a persistent grid; each block quantizes the tokens to int8
//! blocks in shared memory, each warp takes whole rows), above a bf16 tensor-core GEMM
//! (`mma.sync`; the weights decoded to bf16 in shared memory once per 128-token tile).

use super::{QuantMatrix, WeightType};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg,
};
use std::ffi::c_void;
use std::sync::Arc;

/// The kernels' PTX (sm_90), its first line the sha256 of the source it was compiled from.
pub const PTX: &str = include_str!("../../kernels/cuda/qgemm.ptx");

/// The CUDA source of [`PTX`].
const SOURCE: &[u8] = include_bytes!("../../kernels/cuda/qgemm.cu");

/// Environment variable naming a PTX file to load instead of the embedded one (for trying an
/// edited `qgemm.cu` on the GPU machine before its PTX is committed; `scripts/cuda-bench.sh`).
pub const PTX_OVERRIDE_ENV: &str = "QFORGE_CUDA_PTX";

/// Largest `m` the GEMV kernels take; the tensor-core GEMM runs above.
pub const GEMV_MAX_M: usize = 8;

/// `k` must be a multiple of this (the GEMM's step along `k`).
pub const K_STEP: usize = 128;

/// The weight types the CUDA kernels take: every bench-gemm type.
pub const CUDA_TYPES: [WeightType; 7] = WeightType::ALL;

/// Zero bytes after the weights: the kernels' unaligned loads read whole words past a row's
/// last 2-aligned block, and the GEMM stages a row's last 256-value window whole (up to 304
/// bytes from an aligned word where the row has 128 values left).
const WEIGHT_PAD: usize = 320;

/// Zero values after the NF4 absmax: the GEMV copies whole aligned 16-byte words.
const ABSMAX_PAD: usize = 16;

/// Threads per block of every kernel.
const THREADS: u32 = 256;

/// Shared memory the driver keeps per block (of the multiprocessor's total).
const SMEM_RESERVED: usize = 1024;

/// GEMV stage bytes a warp: at least two stages of the largest item (four NF4 rows of 128
/// sub-blocks with their absmax, 9472 bytes: `Layout` and `GEMV_R` in qgemm.cu), at most
/// 32 KB.
const GEMV_MIN_BUDGET: usize = 19 << 10;
const GEMV_MAX_BUDGET: usize = 32 << 10;

/// The `__constant__` of the PTX that gives the GEMM's launch shape.
const GEMM_CONFIG: &str = "gemm_config";
/// The module global that, where present and 1, asks for a persistent GEMM grid
/// (`gemm_persistent` in qgemm.cu).
const GEMM_PERSISTENT: &str = "gemm_persistent";

/// How a call's kernels follow the kernel before them in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// Each kernel starts once the previous one has finished (plain stream order).
    Serial,
    /// Programmatic dependent launch (compute capability 9.0 and above; `Serial` below): a
    /// kernel may start while the previous one drains, loading weights until the previous
    /// kernel's writes are visible (`pdl_wait` in qgemm.cu), as a model's layers run.
    Programmatic,
}

/// The source hash [`PTX`] was compiled from (its first line).
pub fn ptx_source_sha256(ptx: &str) -> Option<&str> {
    ptx.lines()
        .next()?
        .strip_prefix("// qforge source sha256: ")
        .map(str::trim)
}

/// The sha256 of `kernels/cuda/qgemm.cu` as built into this binary.
pub fn source_sha256() -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(SOURCE);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An open GPU with the kernels loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    /// Device name.
    pub name: String,
    /// Compute capability, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
    /// Multiprocessors.
    pub sms: u32,
    /// L2 cache bytes.
    pub l2_bytes: u64,
    /// sha256 of the source the loaded PTX was compiled from (its first line).
    pub ptx_source_sha256: Option<String>,
    /// Shared memory a block may opt in to.
    smem_optin: u32,
    /// The GEMM's launch shape, as the loaded kernels declare it.
    gemm: GemmConfig,
}

/// The `N` i32 of the `__constant__` `name` of the module.
fn read_i32s<const N: usize>(
    module: &Arc<CudaModule>,
    stream: &Arc<CudaStream>,
    name: &str,
) -> Result<[i32; N]> {
    let global = driver(module.get_global(name, stream), "module global")?;
    let len = global.len();
    if len != 4 * N {
        anyhow::bail!("CUDA module global {name} has {len} bytes, not {}", 4 * N);
    }
    let mut bytes = vec![0u8; 4 * N];
    driver(stream.memcpy_dtoh(&global, &mut bytes), "download")?;
    driver(stream.synchronize(), "synchronize")?;
    Ok(std::array::from_fn(|i| {
        i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap())
    }))
}

/// The GEMM kernels' launch shape, read from the PTX (`gemm_config` in qgemm.cu), so the
/// host follows the kernels' tile sizes.
#[derive(Debug, Clone, Copy)]
struct GemmConfig {
    /// Tokens per block.
    tile_m: usize,
    /// Weight rows per block.
    tile_n: usize,
    /// Dynamic shared memory bytes per block.
    smem: u32,
    /// Threads per block.
    threads: u32,
    /// Blocks along `k` whose partial sums are added into `y` (1: each block writes its outputs).
    splits: u32,
    /// One block a multiprocessor, at most one a tile, each taking an even share of the
    /// tiles' k steps and adding into `y` (then `splits` is 2 and there is no grid along k).
    persistent: bool,
}

impl GemmConfig {
    fn read(module: &Arc<CudaModule>, stream: &Arc<CudaStream>) -> Result<GemmConfig> {
        let [tile_m, tile_n, smem, threads, splits] = read_i32s::<5>(module, stream, GEMM_CONFIG)?;
        if tile_m <= 0
            || tile_n <= 0
            || smem < 0
            || threads <= 0
            || threads % 32 != 0
            || threads > 1024
            || !(1..=2).contains(&splits)
        {
            anyhow::bail!("CUDA module global {GEMM_CONFIG} is not a launch shape: {tile_m}, {tile_n}, {smem}, {threads}, {splits}");
        }
        // Absent from modules compiled before it (a variant's or an older PTX): not persistent.
        let persistent = match module.get_global(GEMM_PERSISTENT, stream) {
            Ok(_) => read_i32s::<1>(module, stream, GEMM_PERSISTENT)? == [1],
            Err(_) => false,
        };
        if persistent && splits != 2 {
            anyhow::bail!(
                "CUDA module: a persistent GEMM adds into y, so {GEMM_CONFIG} must say 2 splits"
            );
        }
        Ok(GemmConfig {
            tile_m: tile_m as usize,
            tile_n: tile_n as usize,
            smem: smem as u32,
            threads: threads as u32,
            splits: splits as u32,
            persistent,
        })
    }
}

/// A weight matrix in GPU memory, in its stored layout.
pub struct GpuMatrix {
    /// Weight type.
    pub ty: WeightType,
    /// Output rows.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    data: CudaSlice<u8>,
    /// NF4 absmax (one element for other types: the kernels take a pointer).
    absmax: CudaSlice<f32>,
}

impl GpuMatrix {
    /// Bytes held on the GPU (blocks or codes, plus NF4 absmax).
    pub fn bytes(&self) -> u64 {
        (self.data.len() - WEIGHT_PAD) as u64
            + if self.ty == WeightType::Nf4 {
                (self.absmax.len() - ABSMAX_PAD) as u64 * 4
            } else {
                0
            }
    }
}

/// Device buffers of one call with `m` tokens: f32 activations and outputs, and the bf16
/// activations the GEMM path writes.
pub struct Scratch {
    /// Tokens.
    pub m: usize,
    /// Activations, `m x k`.
    pub x: CudaSlice<f32>,
    /// Outputs, `m x n`.
    pub y: CudaSlice<f32>,
    xb: CudaSlice<u16>,
}

impl Scratch {
    /// Bytes of the buffers.
    pub fn bytes(&self) -> u64 {
        (self.x.len() * 4 + self.y.len() * 4 + self.xb.len() * 2) as u64
    }
}

fn driver<T>(r: Result<T, cudarc::driver::DriverError>, what: &str) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("CUDA {what}: {e}"))
}

/// A kernel argument for [`Gpu::launch`]: a pointer to its value.
fn arg<T>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

impl Gpu {
    /// Opens GPU 0 and loads the kernels. Without a driver library or a device this is an
    /// invalid-input error (exit 2) saying so; nothing is called before the probe.
    pub fn open() -> Result<Gpu> {
        // SAFETY: only tries to open the driver library by its known names.
        if !unsafe { sys::is_culib_present() } {
            bail_invalid!("--device cuda: no CUDA driver on this machine (libcuda.so not found)");
        }
        let ctx = CudaContext::new(0)
            .map_err(|e| invalid!("--device cuda: no usable CUDA device ({e})"))?;
        let compute_capability = driver(ctx.compute_capability(), "device query")?;
        // The committed PTX targets sm_90a (the GEMM's wgmma), which loads on Hopper only.
        if compute_capability.0 != 9 {
            bail_invalid!(
                "--device cuda: compute capability {}.{} is not 9.x (Hopper), which the kernels (PTX for sm_90a) need",
                compute_capability.0,
                compute_capability.1
            );
        }
        let attr = |a| driver(ctx.attribute(a), "device query");
        let sms = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let l2_bytes = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64;
        let smem_optin =
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as u32;
        let name = driver(ctx.name(), "device query")?;
        let ptx = match std::env::var_os(PTX_OVERRIDE_ENV) {
            Some(path) => std::fs::read_to_string(&path)
                .with_context(|| format!("reading {PTX_OVERRIDE_ENV}={}", path.display()))?,
            None => PTX.to_string(),
        };
        let ptx_source_sha256 = ptx_source_sha256(&ptx).map(str::to_string);
        let module = driver(
            ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)),
            "module load",
        )?;
        let stream = ctx.default_stream();
        let gemm = GemmConfig::read(&module, &stream)?;
        Ok(Gpu {
            ctx,
            stream,
            module,
            name,
            compute_capability,
            sms,
            l2_bytes,
            ptx_source_sha256,
            smem_optin,
            gemm,
        })
    }

    /// Kernel `name`, allowed `smem` bytes of dynamic shared memory.
    fn function(&self, name: &str, smem: u32) -> Result<CudaFunction> {
        let f = driver(self.module.load_function(name), &format!("kernel {name}"))?;
        if smem > 48 << 10 {
            driver(
                f.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                ),
                "kernel attribute",
            )?;
        }
        Ok(f)
    }

    /// Checks that the kernels take this shape.
    pub fn check_shape(ty: WeightType, n: usize, k: usize) -> Result<()> {
        QuantMatrix::check_shape(ty, n, k)?;
        if !k.is_multiple_of(K_STEP) || k > i32::MAX as usize / 2 || n > i32::MAX as usize {
            bail_invalid!("--device cuda: k must be a multiple of {K_STEP} (got {k})");
        }
        Ok(())
    }

    /// Copies `w` to the GPU as it is stored.
    pub fn upload(&self, w: &QuantMatrix) -> Result<GpuMatrix> {
        Self::check_shape(w.ty, w.n, w.k)?;
        let mut padded = Vec::with_capacity(w.data.len() + WEIGHT_PAD);
        padded.extend_from_slice(&w.data);
        padded.resize(w.data.len() + WEIGHT_PAD, 0);
        let data = driver(self.stream.clone_htod(&padded), "upload")?;
        let absmax = if w.absmax.is_empty() {
            driver(self.stream.alloc_zeros::<f32>(1), "alloc")?
        } else {
            let mut a = Vec::with_capacity(w.absmax.len() + ABSMAX_PAD);
            a.extend_from_slice(&w.absmax);
            a.resize(w.absmax.len() + ABSMAX_PAD, 0.0);
            driver(self.stream.clone_htod(&a), "upload")?
        };
        Ok(GpuMatrix {
            ty: w.ty,
            n: w.n,
            k: w.k,
            data,
            absmax,
        })
    }

    /// Buffers for calls with `m` tokens on `w`'s shape; `x` is copied in, `y` filled with NaN
    /// (so an output a kernel leaves unwritten shows).
    pub fn scratch(&self, w: &GpuMatrix, x: &[f32]) -> Result<Scratch> {
        let m = x.len() / w.k;
        assert_eq!(x.len(), m * w.k, "x must hold m * k values");
        let s = &self.stream;
        let gemm = m > GEMV_MAX_M || self.gemv_budget(m, w.k).is_none();
        // The GEMM reads whole tiles of tokens (those past m are never written nor output).
        let q = if gemm {
            m.next_multiple_of(self.gemm.tile_m) * w.k
        } else {
            1
        };
        Ok(Scratch {
            m,
            x: driver(s.clone_htod(x), "upload")?,
            y: driver(s.clone_htod(&vec![f32::NAN; m * w.n]), "upload")?,
            xb: driver(s.alloc_zeros::<u16>(q), "alloc")?,
        })
    }

    /// Bytes of the `m` quantized tokens of `k` values in the GEMV's shared memory.
    fn gemv_token_bytes(m: usize, k: usize) -> usize {
        (m * k + 8 * m * (k / 32)).next_multiple_of(16)
    }

    /// The GEMV's stage bytes a warp for `m <= GEMV_MAX_M` tokens of `k` values: 0 for one
    /// token (the register GEMV has no stages); `None` where the tokens and two stages a warp
    /// do not fit in a block's shared memory, and the GEMM takes the call instead.
    fn gemv_budget(&self, m: usize, k: usize) -> Option<usize> {
        let xbytes = Self::gemv_token_bytes(m, k);
        let optin = self.smem_optin as usize;
        if m == 1 {
            return (xbytes <= optin).then_some(0);
        }
        let warps = (THREADS / 32) as usize;
        let free = optin.saturating_sub(SMEM_RESERVED + xbytes);
        let budget = (free / warps).min(GEMV_MAX_BUDGET) & !15;
        (budget >= GEMV_MIN_BUDGET).then_some(budget)
    }

    /// Launches `f` on the stream; with [`Chain::Programmatic`] (and compute capability 9.0
    /// or above) with the programmatic-stream-serialization attribute, so it may start while
    /// the previous kernel drains (every kernel of qgemm.cu waits for it before it touches
    /// what that kernel may write).
    ///
    /// # Safety
    /// `params` points to the kernel's arguments, in order and of its types, and the buffers
    /// behind them hold what the kernel reads and writes with `cfg`.
    unsafe fn launch(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        chain: Chain,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let programmatic = chain == Chain::Programmatic && self.compute_capability >= (9, 0);
        // SAFETY: a zeroed attribute value is valid; the one field set is the one the
        // attribute's id reads.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: u32::from(programmatic),
        };
        driver(self.ctx.bind_to_thread(), "bind context")?;
        // SAFETY: the config is complete and lives across the call; the caller vouches for
        // the kernel's arguments.
        let r = unsafe {
            sys::cuLaunchKernelEx(
                &config,
                f.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        driver(r.result(), "launch")
    }

    /// Queues the GEMV (`m <= GEMV_MAX_M`): shared memory holds the quantized tokens, then
    /// `budget` bytes a warp of stages of streamed weight chunks (none for one token).
    fn enqueue_gemv(
        &self,
        w: &GpuMatrix,
        s: &mut Scratch,
        row_bytes: i32,
        budget: usize,
        chain: Chain,
    ) -> Result<()> {
        let (m, n, k) = (s.m, w.n, w.k);
        let warps = (THREADS / 32) as usize;
        let smem = (Self::gemv_token_bytes(m, k) + warps * budget) as u32;
        let f = self.function(&format!("gemv_{}_m{m}", w.ty.name()), smem)?;
        let per_sm = driver(
            f.occupancy_max_active_blocks_per_multiprocessor(THREADS, smem as usize, None),
            "occupancy",
        )?
        .max(1);
        // A persistent grid: every resident warp strides over the rows.
        let grid = (per_sm * self.sms).min(n.div_ceil(warps) as u32).max(1);
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let (ni, ki, bi) = (n as i32, k as i32, budget as i32);
        // SAFETY: the arguments match the kernel's signature; the buffers hold n rows of
        // row_bytes (padded), m x k and m x n values, as the kernel reads and writes; the
        // shared memory holds the tokens and `budget` bytes a warp, which the kernel checks.
        unsafe { self.launch_product(&f, cfg, chain, w, &s.x, &mut s.y, &[ni, ki, row_bytes, bi]) }
    }

    /// Launches a product kernel, whose arguments are the weights, the NF4 absmax, the
    /// activations `input`, the outputs `y`, then `ints`.
    ///
    /// # Safety
    /// As [`Gpu::launch`]: `f` takes these arguments, and the buffers hold what it reads and
    /// writes with `cfg`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn launch_product<T>(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        chain: Chain,
        w: &GpuMatrix,
        input: &CudaSlice<T>,
        y: &mut CudaSlice<f32>,
        ints: &[i32],
    ) -> Result<()> {
        let st = &self.stream;
        let ((wp, _w), (ap, _a), (ip, _i)) = (
            w.data.device_ptr(st),
            w.absmax.device_ptr(st),
            input.device_ptr(st),
        );
        let (yp, _y) = y.device_ptr_mut(st);
        let mut params = vec![arg(&wp), arg(&ap), arg(&ip), arg(&yp)];
        params.extend(ints.iter().map(arg));
        // SAFETY: the caller vouches for the kernel and the buffers.
        unsafe { self.launch(f, cfg, chain, &mut params) }
    }

    /// Queues `y = x W^T` for the `s.m` tokens of `s` (GEMV up to [`GEMV_MAX_M`] where its
    /// shared memory fits; otherwise the activations converted to bf16, then the tensor-core
    /// GEMM), each kernel following the previous one as `chain` says.
    pub fn enqueue(&self, w: &GpuMatrix, s: &mut Scratch, chain: Chain) -> Result<()> {
        let (m, n, k) = (s.m, w.n, w.k);
        let row_bytes = QuantMatrix::row_bytes_of(w.ty, k) as i32;
        let (ni, ki) = (n as i32, k as i32);
        if m <= GEMV_MAX_M {
            if let Some(budget) = self.gemv_budget(m, k) {
                return self.enqueue_gemv(w, s, row_bytes, budget, chain);
            }
        }
        let st = &self.stream;
        let q = self.function("gemm_input", 0)?;
        let cfg = LaunchConfig {
            grid_dim: (m as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        {
            let (xp, _x) = s.x.device_ptr(st);
            let (bp, _b) = s.xb.device_ptr_mut(st);
            // SAFETY: x holds m * k values (k a multiple of 8), xb as many for m rounded up to
            // whole tiles; block t converts token t.
            unsafe { self.launch(&q, cfg, chain, &mut [arg(&xp), arg(&bp), arg(&ki)])? };
        }
        let g = self.gemm;
        let f = self.function(&format!("gemm_{}", w.ty.name()), g.smem)?;
        let mi = m as i32;
        if g.splits > 1 {
            driver(self.stream.memset_zeros(&mut s.y), "memset")?;
        }
        let (tiles_n, tiles_m) = (n.div_ceil(g.tile_n) as u32, m.div_ceil(g.tile_m) as u32);
        let grid_dim = if g.persistent {
            ((tiles_n * tiles_m).min(self.sms), 1, 1)
        } else {
            (tiles_n, tiles_m, g.splits)
        };
        let cfg = LaunchConfig {
            grid_dim,
            block_dim: (g.threads, 1, 1),
            shared_mem_bytes: g.smem,
        };
        // SAFETY: the arguments match the kernel's signature; the kernel clamps rows to n and
        // tokens to m.
        unsafe { self.launch_product(&f, cfg, chain, w, &s.xb, &mut s.y, &[mi, ni, ki, row_bytes]) }
    }

    /// The outputs of `s`, after the queued work finished; an error if any is NaN (a kernel
    /// left it unwritten).
    pub fn outputs(&self, s: &Scratch) -> Result<Vec<f32>> {
        let y = driver(self.stream.clone_dtoh(&s.y), "download")?;
        if let Some(i) = y.iter().position(|v| v.is_nan()) {
            anyhow::bail!("CUDA kernel left output {i} of {} unwritten (NaN)", y.len());
        }
        Ok(y)
    }

    /// `y = x W^T` (`m = x.len() / k` tokens), synchronously: the library entry point.
    pub fn matmul(&self, w: &GpuMatrix, x: &[f32]) -> Result<Vec<f32>> {
        let mut s = self.scratch(w, x)?;
        self.enqueue(w, &mut s, Chain::Programmatic)?;
        self.outputs(&s)
    }

    /// GPU times in seconds of `reps` calls of `call(rep)`, each between two CUDA events; all
    /// are queued behind a spin kernel, so they run back to back and the events time the GPU.
    /// Each time includes what one pair of events around one launch adds (about 2 us on an
    /// H200 against launches back to back): [`Gpu::time_batched`] leaves that out.
    pub fn time(&self, reps: usize, call: impl FnMut(usize) -> Result<()>) -> Result<Vec<f64>> {
        self.time_batched(reps, 1, call)
    }

    /// Per-call GPU times in seconds of `batches` batches of `per_batch` calls back to back
    /// (call `i` of batch `b` is `call(b * per_batch + i)`), one pair of CUDA events around
    /// each batch, its time divided by `per_batch`: how llama.cpp's peer is timed (a graph of
    /// one product per weight copy). All are queued behind a spin kernel, so the events time
    /// the GPU, not the launch path.
    pub fn time_batched(
        &self,
        batches: usize,
        per_batch: usize,
        mut call: impl FnMut(usize) -> Result<()>,
    ) -> Result<Vec<f64>> {
        let per_batch = per_batch.max(1);
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::with_capacity(batches);
        for _ in 0..batches {
            events.push((
                driver(self.ctx.new_event(flags), "event")?,
                driver(self.ctx.new_event(flags), "event")?,
            ));
        }
        let spin = self.function("spin", 0)?;
        let ns: u64 = 20_000 * (batches * per_batch).max(50) as u64;
        let mut b = self.stream.launch_builder(&spin);
        b.arg(&ns);
        // SAFETY: spin takes one u64.
        driver(
            unsafe { b.launch(LaunchConfig::for_num_elems(1)) },
            "launch",
        )?;
        for (batch, (start, end)) in events.iter().enumerate() {
            driver(start.record(&self.stream), "event")?;
            for i in 0..per_batch {
                call(batch * per_batch + i)?;
            }
            driver(end.record(&self.stream), "event")?;
        }
        driver(self.stream.synchronize(), "synchronize")?;
        events
            .iter()
            .map(
                |(s, e)| Ok(f64::from(driver(s.elapsed_ms(e), "event")?) * 1e-3 / per_batch as f64),
            )
            .collect()
    }

    /// Device-memory read bandwidth (10^9 bytes/s), the median of `reps` passes over a
    /// `bytes` buffer of non-zero data (many times the L2), with 16-byte streaming loads.
    pub fn read_bandwidth_gbs(&self, bytes: usize, reps: usize) -> Result<f64> {
        let words = bytes / 16;
        let pattern: Vec<u8> = (0..words * 16).map(|i| (i * 131 + 7) as u8).collect();
        let buf = driver(self.stream.clone_htod(&pattern), "upload")?;
        drop(pattern);
        let mut sink = driver(self.stream.alloc_zeros::<u32>(1), "alloc")?;
        let f = self.function("read_bw", 0)?;
        let cfg = LaunchConfig {
            grid_dim: (self.sms * 8, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (w, never) = (words as u64, 0x9e37_79b9u32);
        let mut times = self.time(reps.max(3), |_| {
            let mut b = self.stream.launch_builder(&f);
            b.arg(&buf).arg(&w).arg(&never).arg(&mut sink);
            // SAFETY: buf holds `words` 16-byte words; sink one u32.
            driver(unsafe { b.launch(cfg) }, "launch").map(|_| ())
        })?;
        let t = super::roofline::median(&mut times);
        Ok((words * 16) as f64 / t / 1e9)
    }
}

/// Clocks and identity of GPU 0 as `nvidia-smi` reports them now; `None` without it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Clocks {
    /// SM clock, MHz.
    pub sm_mhz: u32,
    /// Memory clock, MHz.
    pub mem_mhz: u32,
    /// Maximum SM clock, MHz.
    pub max_sm_mhz: u32,
    /// Maximum memory clock, MHz.
    pub max_mem_mhz: u32,
    /// Driver version.
    pub driver: String,
}

impl Clocks {
    /// Reads them with `nvidia-smi --query-gpu` (GPU 0).
    pub fn read() -> Option<Clocks> {
        let out = std::process::Command::new("nvidia-smi")
            .args([
                "--id=0",
                "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version",
                "--format=csv,noheader,nounits",
            ])
            .output()
            .ok()?;
        Self::parse(std::str::from_utf8(&out.stdout).ok()?)
    }

    fn parse(line: &str) -> Option<Clocks> {
        let f: Vec<&str> = line.trim().split(',').map(str::trim).collect();
        let [sm, mem, max_sm, max_mem, driver] = f[..] else {
            return None;
        };
        Some(Clocks {
            sm_mhz: sm.parse().ok()?,
            mem_mhz: mem.parse().ok()?,
            max_sm_mhz: max_sm.parse().ok()?,
            max_mem_mhz: max_mem.parse().ok()?,
            driver: driver.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{activations, assert_close};

    #[test]
    fn committed_ptx_was_compiled_from_this_source() {
        assert_eq!(
            ptx_source_sha256(PTX),
            Some(source_sha256().as_str()),
            "kernels/cuda/qgemm.cu changed after its PTX was made: run scripts/cuda-ptx.sh on \
             a machine with nvcc and commit kernels/cuda/qgemm.ptx"
        );
        assert!(PTX.contains(".target sm_90"));
    }

    /// The lean Q4_K one-token GEMV (qgemm.cu's `M1_Q4K_LEAN` variant) on the CPU:
    /// `scripts/cuda/emu/run.sh` runs its device code on host threads against the f64
    /// product (no GPU needed); skipped where g++ or python3 is missing.
    #[test]
    fn lean_q4k_gemv_matches_in_the_cpu_emulation() {
        let have = |c: &str| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("g++") || !have("python3") {
            eprintln!("skipped: no g++ or python3");
            return;
        }
        let out = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/cuda/emu/run.sh"
            ))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn clocks_parse_nvidia_smi() {
        let c = Clocks::parse("1980, 3201, 1980, 3201, 580.159.04\n").unwrap();
        assert_eq!((c.sm_mhz, c.mem_mhz, c.max_sm_mhz), (1980, 3201, 1980));
        assert_eq!(c.driver, "580.159.04");
        assert!(Clocks::parse("[N/A], 3201, 1980, 3201, 580").is_none());
    }

    #[test]
    fn shapes_the_kernels_take() {
        assert!(Gpu::check_shape(WeightType::Q4K, 3, 256).is_ok());
        assert!(Gpu::check_shape(WeightType::Q8_0, 3, 64).is_err());
        assert!(Gpu::check_shape(WeightType::Nf4, 3, 384).is_ok());
        assert!(Gpu::check_shape(WeightType::Q5K, 3, 256).is_ok());
        assert!(Gpu::check_shape(WeightType::Iq4Xs, 3, 512).is_ok());
        assert!(Gpu::check_shape(WeightType::Iq4Xs, 3, 128).is_err());
    }

    /// On a machine with a GPU: every type, GEMV and GEMM token counts, row counts that are
    /// not a multiple of the tile, against the f64 reference (skipped without a GPU).
    #[test]
    fn gpu_kernels_match_the_reference() {
        // SAFETY: only tries to open the driver library.
        if !unsafe { sys::is_culib_present() } {
            eprintln!("skipped: no CUDA driver");
            return;
        }
        let gpu = match Gpu::open() {
            Ok(g) => g,
            Err(e) => {
                eprintln!("skipped: {e:#}");
                return;
            }
        };
        // k = 768: one partial GEMV chunk a row; k = 4352: a whole chunk and a partial one
        // (two whole ones for Q8_0 and Q6_K), rows that are not 16-byte aligned for Q8_0/Q4_0.
        for (n, k, ms) in [
            (200, 768, &[1, 2, 5, 8, 9, 70][..]),
            (67, 4352, &[1, 3, 8, 17][..]),
            (33, 6144, &[2, 8][..]),
        ] {
            for ty in CUDA_TYPES {
                let w = QuantMatrix::random(ty, n, k, 5).unwrap();
                let gw = gpu.upload(&w).unwrap();
                for &m in ms {
                    let x = activations(m, k);
                    let y = gpu.matmul(&gw, &x).unwrap();
                    let want = crate::kernels::reference_matmul(&w, &x);
                    let what = format!("cuda {} n={n} k={k} m={m}", ty.name());
                    assert_close(&w, &x, &y, &want, &what);
                }
            }
        }
    }
}

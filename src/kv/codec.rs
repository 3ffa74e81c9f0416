//! The [`KvCodec`] interface and the rotated vector-quantization codec.
//!
//! [`VqCodec`] implements FibQuant (block_dim `k` in 2..=8) and, with `k = 1`,
//! the TurboQuant-style scalar baseline: same code path, different codebook.
//!
//! Per row `x` (length `d`), the encoded record is `2 + ceil((D/k)·log2 N / 8)` bytes:
//! the fp16 norm `||x||` (little-endian), then the `D/k` block indices packed
//! LSB-first (`pack.rs`). Encoding: `u = x/||x||`, `y = R(u)` (`rotation.rs`),
//! index of each k-block = nearest codeword (`search.rs`). A norm that rounds
//! to fp16 zero is stored as 0 and decodes to the zero vector. Decoding:
//! `x̂ = fp16(||x||) · R⁻¹(c_{i_0} ‖ c_{i_1} ‖ ...)`, padding dropped.
//! Rows are independent, so any row can be decoded alone (random access).

use anyhow::{bail, Context, Result};
use half::f16;
use rayon::prelude::*;

use super::codebook::{check_dims, Codebook, MAX_BLOCK_DIM, MAX_CODEBOOK_SIZE};
use super::lloyd::{calibration_blocks, refine, spherical_beta_blocks, LloydReport};
use super::pack::{pack_unchecked, packed_len, unpack_unchecked};
use super::rotation::{padded_dim, Rotation};
use super::search::{NearestSearch, LANE_MULTIPLE};
use super::tensor::Matrix;
use crate::cpu::Level;

/// A KV matrix codec: `[tokens x head_dim]` f32 <-> bytes.
pub trait KvCodec: Send + Sync {
    /// Short identifier, e.g. `fibquant-k4-n256`.
    fn name(&self) -> String;
    /// Head dimension the codec accepts.
    fn head_dim(&self) -> usize;
    /// Nominal storage cost in bits per value (metadata included).
    fn bits_per_value(&self) -> f64;
    /// Exact encoded size in bytes for `rows` rows.
    fn encoded_len(&self, rows: usize) -> usize;
    /// Encodes a `[rows x head_dim]` matrix.
    fn encode(&self, m: &Matrix) -> Result<Vec<u8>>;
    /// Decodes `rows` rows from `bytes` (exactly `encoded_len(rows)` bytes).
    fn decode(&self, bytes: &[u8], rows: usize) -> Result<Matrix>;
    /// `decode(encode(m))`.
    fn round_trip(&self, m: &Matrix) -> Result<Matrix> {
        let bytes = self.encode(m)?;
        self.decode(&bytes, m.rows())
    }
}

/// Checks a matrix against a codec's head_dim.
pub fn check_matrix(codec: &dyn KvCodec, m: &Matrix) -> Result<()> {
    if m.cols() != codec.head_dim() {
        bail!(
            "{}: matrix has {} columns, codec head_dim is {}",
            codec.name(),
            m.cols(),
            codec.head_dim()
        );
    }
    Ok(())
}

/// Checks an encoded buffer's length.
pub fn check_encoded(codec: &dyn KvCodec, bytes: &[u8], rows: usize) -> Result<()> {
    let want = codec.encoded_len(rows);
    if bytes.len() != want {
        bail!(
            "{}: encoded data is {} bytes, {rows} rows need {want}",
            codec.name(),
            bytes.len()
        );
    }
    Ok(())
}

/// Parameters of a rotated VQ codec and its codebook training.
#[derive(Debug, Clone, PartialEq)]
pub struct VqParams {
    /// Head dimension `d`.
    pub head_dim: usize,
    /// Block dimension `k` (1 = scalar TurboQuant-style, 2..=8 = FibQuant).
    pub block_dim: usize,
    /// Codebook size `N` (power of two, 2..=4096).
    pub codebook_size: usize,
    /// Seed for the rotation signs and the training samples.
    pub seed: u64,
    /// Lloyd iterations.
    pub lloyd_iterations: u32,
    /// Training blocks (spherical-Beta samples, or cap on calibration blocks).
    pub training_blocks: usize,
    /// Bits of each row's norm: 16 (fp16) or 8 ([`NormCode`]'s log scale).
    pub norm_bits: u32,
}

impl VqParams {
    /// Parameters with defaults: seed 0, 25 Lloyd iterations, `clamp(128·N, 16384, 262144)` blocks.
    pub fn new(head_dim: usize, block_dim: usize, codebook_size: usize) -> Self {
        Self {
            head_dim,
            block_dim,
            codebook_size,
            seed: 0,
            lloyd_iterations: 25,
            training_blocks: (128 * codebook_size).clamp(16_384, 262_144),
            norm_bits: 16,
        }
    }

    /// Padded dimension `D`.
    pub fn padded_dim(&self) -> usize {
        padded_dim(self.head_dim)
    }

    /// Index width `log2 N`.
    pub fn index_bits(&self) -> u32 {
        self.codebook_size.trailing_zeros()
    }

    /// `(norm_bits + (D/k)·log2 N) / d`.
    pub fn bits_per_value(&self) -> f64 {
        let blocks = self.padded_dim() / self.block_dim.max(1);
        (f64::from(self.norm_bits) + (blocks as u64 * u64::from(self.index_bits())) as f64)
            / self.head_dim as f64
    }

    /// Rejects out-of-range values with a clear message.
    pub fn validate(&self) -> Result<()> {
        if self.head_dim == 0 || self.head_dim > super::rotation::MAX_DIM {
            bail!(
                "head_dim must be in 1..={}, got {}",
                super::rotation::MAX_DIM,
                self.head_dim
            );
        }
        if self.block_dim == 0 || self.block_dim > MAX_BLOCK_DIM {
            bail!(
                "block_dim must be in 1..={MAX_BLOCK_DIM}, got {}",
                self.block_dim
            );
        }
        let d = self.padded_dim();
        if !d.is_multiple_of(self.block_dim) || d <= self.block_dim {
            bail!(
                "padded dim {d} (head_dim {} rounded up to a power of two) must be a multiple of block_dim {} and larger than it",
                self.head_dim,
                self.block_dim
            );
        }
        if !self.codebook_size.is_power_of_two()
            || !(2..=MAX_CODEBOOK_SIZE).contains(&self.codebook_size)
        {
            bail!(
                "codebook_size must be a power of two in 2..={MAX_CODEBOOK_SIZE}, got {}",
                self.codebook_size
            );
        }
        if self.training_blocks < self.codebook_size {
            bail!(
                "training_blocks ({}) must be at least codebook_size ({})",
                self.training_blocks,
                self.codebook_size
            );
        }
        if self.training_blocks > 1 << 24 {
            bail!(
                "training_blocks must be at most 16777216, got {}",
                self.training_blocks
            );
        }
        if self.norm_bits != 16 && self.norm_bits != 8 {
            bail!("norm_bits must be 16 or 8, got {}", self.norm_bits);
        }
        if self.lloyd_iterations > 1000 {
            bail!(
                "lloyd_iterations must be at most 1000, got {}",
                self.lloyd_iterations
            );
        }
        check_dims(self.block_dim, self.codebook_size, d)
    }

    /// Trains the codebook: radial-angular init, then Lloyd on calibration rows
    /// (rotated unit blocks, capped at `training_blocks`) or, without calibration,
    /// on `training_blocks` spherical-Beta samples.
    pub fn train_codebook(&self, calibration: Option<&[f32]>) -> Result<(Codebook, LloydReport)> {
        self.validate()?;
        let (k, n, d) = (self.block_dim, self.codebook_size, self.padded_dim());
        let init = Codebook::initial(k, n, d)?;
        let samples = match calibration {
            Some(rows) => {
                let rot = Rotation::new(self.head_dim, self.seed)?;
                let s = calibration_blocks(&rot, k, rows, self.training_blocks)?;
                if s.len() / k < n {
                    bail!(
                        "calibration gives {} non-zero blocks, need at least codebook_size {n}",
                        s.len() / k
                    );
                }
                s
            }
            None => spherical_beta_blocks(d, k, self.training_blocks, self.seed)?,
        };
        refine(&init, &samples, self.lloyd_iterations)
    }

    /// Trains a codebook and builds the codec.
    pub fn build(&self, name: &str, calibration: Option<&[f32]>) -> Result<VqCodec> {
        let (cb, _) = self.train_codebook(calibration)?;
        let mut codec = VqCodec::new(name, self.head_dim, self.seed, cb)?;
        codec.set_norm_bits(self.norm_bits)?;
        Ok(codec)
    }
}

/// How a row's norm is stored: IEEE fp16 (2 bytes, little-endian), or one byte on a log
/// scale, `c = 0` a zero row and `c ≥ 1` the norm `2^((c − 128) / 32)` (about 1/16 to 16,
/// steps of 2.2%; a norm is stored as the nearest code in the log domain, clamped to
/// 1..=255). The 8-bit scale suits rows whose norms sit near 1, as the channel maps of a
/// profile with 8-bit norms put them (docs/kv-profile.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormCode {
    /// 16-bit IEEE half.
    Fp16,
    /// 8-bit log scale.
    Log8,
}

/// `2^(1/32)`, the ratio of consecutive 8-bit norm codes.
const LOG8_RATIO: f64 = 1.021_897_148_654_116_7;

impl NormCode {
    /// Bytes per stored norm.
    pub fn bytes(self) -> usize {
        match self {
            NormCode::Fp16 => 2,
            NormCode::Log8 => 1,
        }
    }

    /// The 256 values of the 8-bit codes, by repeated multiplication in f64 (exact IEEE
    /// operations, so the same on every machine).
    fn log8_table() -> [f32; 256] {
        let mut t = [0f32; 256];
        let mut up = 1f64;
        let mut down = 1f64;
        t[128] = 1.0;
        for i in 1..128 {
            up *= LOG8_RATIO;
            down /= LOG8_RATIO;
            t[128 + i] = up as f32;
            t[128 - i] = down as f32;
        }
        t
    }

    /// Stores `n` (finite, non-negative) into `out` (`bytes()` long); `table` is
    /// [`NormCode::log8_table`]. Errors when an fp16 norm overflows.
    fn store(self, n: f32, table: &[f32; 256], out: &mut [u8]) -> Result<()> {
        match self {
            NormCode::Fp16 => {
                let h = f16::from_f32(n);
                if h.is_infinite() {
                    bail!("norm {n}, above the fp16 maximum 65504");
                }
                out[..2].copy_from_slice(&h.to_bits().to_le_bytes());
            }
            NormCode::Log8 => {
                out[0] = if n == 0.0 {
                    0
                } else {
                    // Nearest code in the log domain: the first whose geometric midpoint
                    // with the next code is above n.
                    let mut c = 1usize;
                    while c < 255 && (table[c] * table[c + 1]).sqrt() < n {
                        c += 1;
                    }
                    c as u8
                };
            }
        }
        Ok(())
    }

    /// The stored norm.
    fn load(self, b: &[u8], table: &[f32; 256]) -> f32 {
        match self {
            NormCode::Fp16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            NormCode::Log8 => table[b[0] as usize],
        }
    }
}

/// Rows per rayon task in [`KvCodec::encode`] / [`KvCodec::decode`].
const ROWS_PER_TASK: usize = 256;
/// Rows per nearest-search pass inside one task.
const ROWS_PER_PASS: usize = 16;

/// Normalize-rotate-blockwise-VQ codec with an explicit codebook.
#[derive(Debug, Clone)]
pub struct VqCodec {
    name: String,
    rotation: Rotation,
    codebook: Codebook,
    search: NearestSearch,
    blocks: usize,
    bits: u32,
    index_bytes: usize,
    unbiased: bool,
    norm: NormCode,
    log8: Box<[f32; 256]>,
}

impl VqCodec {
    /// Builds a codec from a codebook; the codebook's padded dim must be `next_pow2(head_dim)`
    /// and divisible by its block dim.
    pub fn new(name: &str, head_dim: usize, seed: u64, codebook: Codebook) -> Result<Self> {
        let rotation = Rotation::new(head_dim, seed)?;
        let d = rotation.padded_dim();
        if codebook.padded_dim() != d {
            bail!(
                "codebook was built for padded dim {}, head_dim {head_dim} pads to {d}",
                codebook.padded_dim()
            );
        }
        let k = codebook.k();
        if d % k != 0 {
            bail!("padded dim {d} is not a multiple of block_dim {k}");
        }
        let blocks = d / k;
        let bits = codebook.bits();
        Ok(Self {
            name: name.to_string(),
            search: NearestSearch::new(&codebook),
            rotation,
            codebook,
            blocks,
            bits,
            index_bytes: packed_len(blocks, bits),
            unbiased: false,
            norm: NormCode::Fp16,
            log8: Box::new(NormCode::log8_table()),
        })
    }

    /// Stores norms in 16 (fp16, the default) or 8 bits ([`NormCode`]).
    pub fn set_norm_bits(&mut self, bits: u32) -> Result<()> {
        self.norm = match bits {
            16 => NormCode::Fp16,
            8 => NormCode::Log8,
            _ => bail!("{}: norm bits must be 16 or 8, got {bits}", self.name),
        };
        Ok(())
    }

    /// Stores `||x|| / <y, ŷ>` instead of `||x||` (y the rotated unit row, ŷ its
    /// codewords), so that the decoded row's projection on the input is the input's
    /// norm: dot products with the decoded row are not shrunk toward zero.
    pub fn set_unbiased(&mut self, unbiased: bool) {
        self.unbiased = unbiased;
    }

    /// Forces a search kernel (tests and benchmarks); errors if unsupported.
    pub fn set_kernel(&mut self, kernel: Level) -> Result<()> {
        self.search = NearestSearch::with_kernel(&self.codebook, kernel)?;
        Ok(())
    }

    /// The codebook.
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }

    /// The rotation.
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    /// Bytes per encoded row.
    pub fn row_bytes(&self) -> usize {
        self.norm.bytes() + self.index_bytes
    }

    /// Encodes whole rows sequentially (no rayon). `rows.len()` must be a multiple of
    /// head_dim and `out.len()` exactly `rows * row_bytes()`.
    pub fn encode_rows(&self, rows: &[f32], out: &mut [u8]) -> Result<()> {
        self.encode_rows_at(rows, out, 0)
    }

    /// Encodes rows on the rayon pool into a caller-provided buffer (see [`VqCodec::encode_rows`]).
    pub fn encode_into(&self, rows: &[f32], out: &mut [u8]) -> Result<()> {
        let (d, rb) = (self.rotation.dim(), self.row_bytes());
        self.check_lengths(rows.len(), out.len())?;
        out.par_chunks_mut(ROWS_PER_TASK * rb)
            .zip(rows.par_chunks(ROWS_PER_TASK * d))
            .enumerate()
            .try_for_each(|(t, (o, x))| self.encode_rows_at(x, o, t * ROWS_PER_TASK))
    }

    /// Decodes rows on the rayon pool into a caller-provided buffer (see [`VqCodec::decode_rows`]).
    pub fn decode_into(&self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        let (d, rb) = (self.rotation.dim(), self.row_bytes());
        self.check_lengths(out.len(), bytes.len())?;
        out.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(bytes.par_chunks(ROWS_PER_TASK * rb))
            .try_for_each(|(o, b)| self.decode_rows(b, o))
    }

    fn check_lengths(&self, values: usize, bytes: usize) -> Result<()> {
        let (d, rb) = (self.rotation.dim(), self.row_bytes());
        if !values.is_multiple_of(d) || bytes != values / d * rb {
            bail!(
                "{}: {values} values and {bytes} encoded bytes do not match head_dim {d} / {rb} bytes per row",
                self.name
            );
        }
        Ok(())
    }

    fn encode_rows_at(&self, rows: &[f32], out: &mut [u8], first_row: usize) -> Result<()> {
        self.check_lengths(rows.len(), out.len())?;
        match self.codebook.k() {
            1 => self.encode_k::<1>(rows, out, first_row),
            2 => self.encode_k::<2>(rows, out, first_row),
            3 => self.encode_k::<3>(rows, out, first_row),
            4 => self.encode_k::<4>(rows, out, first_row),
            5 => self.encode_k::<5>(rows, out, first_row),
            6 => self.encode_k::<6>(rows, out, first_row),
            7 => self.encode_k::<7>(rows, out, first_row),
            _ => self.encode_k::<8>(rows, out, first_row),
        }
    }

    fn encode_k<const K: usize>(
        &self,
        rows: &[f32],
        out: &mut [u8],
        first_row: usize,
    ) -> Result<()> {
        let d = self.rotation.dim();
        let nb = self.blocks;
        let rb = self.row_bytes();
        let stride = (ROWS_PER_PASS * nb).div_ceil(LANE_MULTIPLE) * LANE_MULTIPLE;
        let mut lanes = vec![0.0f32; K * stride];
        let mut idx = vec![0u16; stride];
        let mut y = vec![0.0f32; self.rotation.padded_dim()];
        let mut exact = [0f32; ROWS_PER_PASS];
        for (pass, (xs, os)) in rows
            .chunks(ROWS_PER_PASS * d)
            .zip(out.chunks_mut(ROWS_PER_PASS * rb))
            .enumerate()
        {
            for (r, (x, o)) in xs.chunks_exact(d).zip(os.chunks_exact_mut(rb)).enumerate() {
                let norm = l2_norm(x);
                exact[r] = norm;
                let row_no = first_row + pass * ROWS_PER_PASS + r;
                if !norm.is_finite() {
                    bail!(
                        "{}: row {row_no} has non-finite values (or overflows f32)",
                        self.name
                    );
                }
                if let Err(e) = self.norm.store(norm, &self.log8, o) {
                    bail!("{}: row {row_no} has {e}", self.name);
                }
                if self.norm.load(o, &self.log8) == 0.0 {
                    y.fill(0.0);
                } else {
                    self.rotation.forward_scaled(x, 1.0 / norm, &mut y);
                }
                let lane0 = r * nb;
                for (b, blk) in y.chunks_exact(K).enumerate() {
                    for j in 0..K {
                        lanes[j * stride + lane0 + b] = blk[j];
                    }
                }
            }
            self.search
                .nearest_lanes_unchecked(&lanes, stride, &mut idx);
            for (r, o) in os.chunks_exact_mut(rb).enumerate() {
                let ids = &idx[r * nb..(r + 1) * nb];
                if self.unbiased {
                    self.unbias_norm::<K>(&lanes[r * nb..], stride, ids, o, exact[r]);
                }
                pack_unchecked(ids, self.bits, &mut o[self.norm.bytes()..]);
            }
        }
        Ok(())
    }

    /// Rewrites the stored norm of one row (its first bytes) as `||x|| / <y, ŷ>`;
    /// `lanes[j * stride + b]` is coordinate `j` of the row's block `b`. Keeps `||x||` when
    /// the quotient is not a finite positive fp16 (a zero row, or codewords orthogonal to
    /// the row). With 8-bit norms, `||x||` is the norm before its 8-bit rounding.
    fn unbias_norm<const K: usize>(
        &self,
        lanes: &[f32],
        stride: usize,
        ids: &[u16],
        o: &mut [u8],
        exact: f32,
    ) {
        let norm = match self.norm {
            NormCode::Fp16 => self.norm.load(o, &self.log8),
            NormCode::Log8 => exact,
        };
        if self.norm.load(o, &self.log8) == 0.0 {
            return;
        }
        let cw = self.codebook.codewords();
        let mut dot = 0.0f32;
        for (b, &i) in ids.iter().enumerate() {
            let c = &cw[i as usize * K..][..K];
            for (j, cj) in c.iter().enumerate() {
                dot = lanes[j * stride + b].mul_add(*cj, dot);
            }
        }
        let scaled = f16::from_f32(norm / dot);
        if dot > 0.0 && scaled.is_finite() && scaled.to_f32() > 0.0 {
            match self.norm {
                NormCode::Fp16 => o[..2].copy_from_slice(&scaled.to_bits().to_le_bytes()),
                // Cannot fail: the 8-bit code clamps.
                NormCode::Log8 => {
                    let _ = self.norm.store(norm / dot, &self.log8, o);
                }
            }
        }
    }

    /// Decodes whole rows sequentially (no rayon); `out.len()` must be `rows * head_dim`.
    pub fn decode_rows(&self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        self.check_lengths(out.len(), bytes.len())?;
        match self.codebook.k() {
            1 => self.decode_k::<1>(bytes, out),
            2 => self.decode_k::<2>(bytes, out),
            3 => self.decode_k::<3>(bytes, out),
            4 => self.decode_k::<4>(bytes, out),
            5 => self.decode_k::<5>(bytes, out),
            6 => self.decode_k::<6>(bytes, out),
            7 => self.decode_k::<7>(bytes, out),
            _ => self.decode_k::<8>(bytes, out),
        }
    }

    fn decode_k<const K: usize>(&self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        let d = self.rotation.dim();
        let cw = self.codebook.codewords();
        let mut idx = vec![0u16; self.blocks];
        let mut y = vec![0.0f32; self.rotation.padded_dim()];
        for (b, o) in bytes
            .chunks_exact(self.row_bytes())
            .zip(out.chunks_exact_mut(d))
        {
            let norm = self.norm.load(b, &self.log8);
            if !norm.is_finite() || norm < 0.0 {
                bail!("{}: stored norm {norm} is invalid", self.name);
            }
            if norm == 0.0 {
                o.fill(0.0);
                continue;
            }
            unpack_unchecked(&b[self.norm.bytes()..], self.bits, &mut idx);
            for (blk, &i) in y.chunks_exact_mut(K).zip(&idx) {
                let c: &[f32; K] = cw[i as usize * K..][..K].try_into().unwrap_or(&[0.0; K]);
                blk.copy_from_slice(c);
            }
            self.rotation.inverse_scaled(&mut y, norm, o);
        }
        Ok(())
    }
}

/// Euclidean norm with 8 fixed accumulators (deterministic order, f32).
fn l2_norm(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v * v;
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s.sqrt()
}

impl KvCodec for VqCodec {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn head_dim(&self) -> usize {
        self.rotation.dim()
    }

    fn bits_per_value(&self) -> f64 {
        (8.0 * self.norm.bytes() as f64 + (self.blocks as u64 * u64::from(self.bits)) as f64)
            / self.rotation.dim() as f64
    }

    fn encoded_len(&self, rows: usize) -> usize {
        rows * self.row_bytes()
    }

    fn encode(&self, m: &Matrix) -> Result<Vec<u8>> {
        check_matrix(self, m)?;
        let mut out = vec![0u8; self.encoded_len(m.rows())];
        self.encode_into(m.data(), &mut out)?;
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], rows: usize) -> Result<Matrix> {
        check_encoded(self, bytes, rows)?;
        let mut out = vec![0.0f32; rows * self.head_dim()];
        self.decode_into(bytes, &mut out)
            .with_context(|| format!("decoding {rows} rows"))?;
        Matrix::new(rows, self.head_dim(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::prng::SplitMix64;
    use super::*;

    fn gaussian_matrix(rows: usize, d: usize, seed: u64) -> Matrix {
        let mut r = SplitMix64::new(seed);
        Matrix::new(
            rows,
            d,
            (0..rows * d).map(|_| r.next_gaussian() as f32).collect(),
        )
        .unwrap()
    }

    fn rel_mse(a: &Matrix, b: &Matrix) -> f64 {
        let num: f64 = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum();
        let den: f64 = a.data().iter().map(|x| f64::from(*x).powi(2)).sum();
        num / den
    }

    fn quick(d: usize, k: usize, n: usize) -> VqCodec {
        let mut p = VqParams::new(d, k, n);
        p.seed = 3;
        p.lloyd_iterations = 6;
        p.training_blocks = 8192.max(16 * n);
        p.build("t", None).unwrap()
    }

    #[test]
    fn round_trip_error_shrinks_with_codebook_size() {
        let m = gaussian_matrix(300, 64, 1);
        let e16 = rel_mse(&m, &quick(64, 4, 16).round_trip(&m).unwrap());
        let e256 = rel_mse(&m, &quick(64, 4, 256).round_trip(&m).unwrap());
        assert!(e16 < 0.45, "{e16}");
        assert!(e256 < e16 * 0.75, "{e256} vs {e16}");
    }

    #[test]
    fn padded_head_dim_round_trips() {
        let m = gaussian_matrix(50, 96, 2);
        let c = quick(96, 4, 64);
        assert_eq!(c.rotation().padded_dim(), 128);
        assert_eq!(c.row_bytes(), 2 + 32 * 6 / 8);
        assert!((c.bits_per_value() - (16.0 + 32.0 * 6.0) / 96.0).abs() < 1e-12);
        let r = c.round_trip(&m).unwrap();
        assert!(rel_mse(&m, &r) < 0.3);
    }

    /// Mean of `<x̂, x> / ||x||²` over the rows, and the relative MSE.
    fn projection_and_error(codec: &VqCodec, m: &Matrix) -> (f64, f64) {
        let r = codec.round_trip(m).unwrap();
        let mut proj = 0.0;
        for i in 0..m.rows() {
            let (a, b) = (m.row(i), r.row(i));
            let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
            let nn: f64 = a.iter().map(|x| f64::from(x * x)).sum();
            proj += dot / nn;
        }
        (proj / m.rows() as f64, rel_mse(m, &r))
    }

    #[test]
    fn unbiased_norm_removes_the_shrinkage_of_dot_products() {
        let m = gaussian_matrix(512, 64, 9);
        let mut codec = quick(64, 2, 16);
        let (plain, plain_mse) = projection_and_error(&codec, &m);
        codec.set_unbiased(true);
        let (unbiased, unbiased_mse) = projection_and_error(&codec, &m);
        // Centroids shrink: the projection on the input is about 1 - MSE.
        assert!(plain < 0.99, "plain projection {plain}");
        assert!(
            (unbiased - 1.0).abs() < 2e-3,
            "unbiased projection {unbiased}"
        );
        // The price is a slightly larger error (the noise is scaled by 1/cos).
        assert!(unbiased_mse > plain_mse && unbiased_mse < 1.2 * plain_mse);
        // Same decoder: only the stored norms differ.
        let a = codec.encode(&m).unwrap();
        codec.set_unbiased(false);
        let b = codec.encode(&m).unwrap();
        let rb = codec.row_bytes();
        for (x, y) in a.chunks_exact(rb).zip(b.chunks_exact(rb)) {
            assert_eq!(x[2..], y[2..]);
        }
    }

    #[test]
    fn log8_norms_round_trip_within_a_step() {
        let t = NormCode::log8_table();
        assert_eq!((t[0], t[128]), (0.0, 1.0));
        assert!((t[160] - 2.0).abs() < 1e-6 && (t[96] - 0.5).abs() < 1e-6);
        let mut b = [0u8; 1];
        for i in 0..2000 {
            let n = 0.07 * 1.002f32.powi(i);
            NormCode::Log8.store(n, &t, &mut b).unwrap();
            let back = NormCode::Log8.load(&b, &t);
            assert!((back / n - 1.0).abs() < 0.011, "{n} -> {back}");
        }
        NormCode::Log8.store(0.0, &t, &mut b).unwrap();
        assert_eq!(b[0], 0);
        NormCode::Log8.store(1e9, &t, &mut b).unwrap();
        assert_eq!(b[0], 255);
        NormCode::Log8.store(1e-9, &t, &mut b).unwrap();
        assert_eq!(b[0], 1);
    }

    #[test]
    fn eight_bit_norms_cost_one_byte_and_little_error() {
        let m = gaussian_matrix(300, 64, 11);
        let mut c = quick(64, 2, 64);
        c.set_unbiased(true);
        let e16 = rel_mse(&m, &c.round_trip(&m).unwrap());
        let rb16 = c.row_bytes();
        c.set_norm_bits(8).unwrap();
        assert_eq!(c.row_bytes(), rb16 - 1);
        assert_eq!(c.bits_per_value(), (8.0 + 32.0 * 6.0) / 64.0);
        let e8 = rel_mse(&m, &c.round_trip(&m).unwrap());
        assert!(e8 < 1.05 * e16 && e8 > 0.95 * e16, "{e8} vs {e16}");
        assert!(c.set_norm_bits(12).is_err());
        let mut p = VqParams::new(64, 2, 64);
        p.norm_bits = 8;
        assert_eq!(p.bits_per_value(), c.bits_per_value());
        p.norm_bits = 4;
        assert!(p.validate().unwrap_err().to_string().contains("norm_bits"));
    }

    #[test]
    fn zero_rows_and_scale() {
        let c = quick(16, 2, 16);
        let mut m = gaussian_matrix(3, 16, 4);
        m.data_mut()[16..32].fill(0.0);
        let enc = c.encode(&m).unwrap();
        assert_eq!(&enc[c.row_bytes()..c.row_bytes() + 2], &[0, 0]);
        let r = c.decode(&enc, 3).unwrap();
        assert!(r.row(1).iter().all(|&v| v == 0.0));
        // Norm stored as fp16.
        let n0 = l2_norm(m.row(0));
        let stored = f16::from_bits(u16::from_le_bytes([enc[0], enc[1]])).to_f32();
        assert_eq!(stored, f16::from_f32(n0).to_f32());
    }

    #[test]
    fn encoding_is_deterministic_and_thread_independent() {
        let m = gaussian_matrix(1000, 128, 5);
        let c = quick(128, 4, 32);
        let a = c.encode(&m).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| c.encode(&m)).unwrap();
        assert_eq!(a, b);
        let mut portable = c.clone();
        portable.set_kernel(Level::Scalar).unwrap();
        assert_eq!(portable.encode(&m).unwrap(), a);
        let mut seq = vec![0u8; a.len()];
        c.encode_rows(m.data(), &mut seq).unwrap();
        assert_eq!(seq, a);
        // Same params -> same codebook bytes.
        assert_eq!(
            quick(128, 4, 32).codebook().to_bytes(),
            c.codebook().to_bytes()
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let c = quick(16, 2, 4);
        let mut m = gaussian_matrix(2, 16, 6);
        m.data_mut()[3] = f32::NAN;
        assert!(c.encode(&m).unwrap_err().to_string().contains("row 0"));
        let mut big = gaussian_matrix(2, 16, 6);
        big.data_mut()[20] = 1e6;
        assert!(c.encode(&big).unwrap_err().to_string().contains("fp16"));
        assert!(c.encode(&gaussian_matrix(2, 8, 1)).is_err());
        assert!(c.decode(&[0u8; 5], 2).is_err());
        let mut p = VqParams::new(128, 3, 16);
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("multiple of block_dim"));
        p.block_dim = 4;
        p.codebook_size = 24;
        assert!(p.validate().is_err());
    }
}

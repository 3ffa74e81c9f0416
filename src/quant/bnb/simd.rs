//! Kernels for whole blocks: portable scalar, and x86-64 AVX2 / AVX-512 chosen at run time.
//!
//! The SIMD kernels find each code with a 4-step branch-free binary search over the 15
//! midpoints, using the same `!(bound >= v)` test as the scalar path, so they produce the
//! same bytes (NaN included).

use super::blockwise::{block_absmax, clamp_tiny};
use super::codes::Quantizer;
use super::pack::pack_pair;
use crate::cpu::Level;

/// Blocks handled per group: first all their scales, then all their codes, which keeps one
/// block's absmax -> divide latency off the critical path of the next.
const GROUP: usize = 16;

/// The block loop shared by all kernels: `absmax_of` gives a block's absmax (bitsandbytes'
/// value, NaN included) and `code32` packs 32 values scaled by a reciprocal into 16 bytes.
#[inline(always)]
fn for_each_block(
    x: &[f32],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
    absmax_of: impl Fn(&[f32]) -> f32,
    mut code32: impl FnMut(&[f32], f32, &mut [u8]),
) {
    for ((xg, pg), ag) in x
        .chunks(GROUP * block_size)
        .zip(packed.chunks_mut(GROUP * block_size / 2))
        .zip(absmax.chunks_mut(GROUP))
    {
        let mut recips = [0.0f32; GROUP];
        for ((xb, am), r) in xg.chunks_exact(block_size).zip(ag).zip(&mut recips) {
            *am = absmax_of(xb);
            *r = 1.0 / clamp_tiny(*am);
        }
        for ((xb, pb), &r) in xg
            .chunks_exact(block_size)
            .zip(pg.chunks_exact_mut(block_size / 2))
            .zip(&recips)
        {
            for (xc, pc) in xb.chunks_exact(32).zip(pb.chunks_exact_mut(16)) {
                code32(xc, r, pc);
            }
        }
    }
}

/// Portable kernel.
fn full_blocks_scalar(
    q: &Quantizer,
    x: &[f32],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    for_each_block(x, block_size, packed, absmax, block_absmax, |xc, r, pc| {
        for (p, pair) in pc.iter_mut().zip(xc.chunks_exact(2)) {
            *p = pack_pair(q.code(pair[0] * r), q.code(pair[1] * r));
        }
    });
}

/// Quantizes whole blocks with the kernel of `level` (`x.len()` a multiple of `block_size`,
/// itself a multiple of 32); `level` must be supported by this CPU.
pub(super) fn full_blocks(
    level: Level,
    q: &Quantizer,
    x: &[f32],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    debug_assert!(x.len().is_multiple_of(block_size) && block_size.is_multiple_of(32));
    debug_assert!(packed.len() == x.len() / 2 && absmax.len() == x.len() / block_size);
    assert!(level.is_supported(), "{level} kernel not available");
    match level {
        Level::Scalar => full_blocks_scalar(q, x, block_size, packed, absmax),
        // SAFETY: the CPU supports the level (asserted above).
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { x86::full_blocks_avx2(q, x, block_size, packed, absmax) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::full_blocks_avx512(q, x, block_size, packed, absmax) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => full_blocks_scalar(q, x, block_size, packed, absmax),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::blockwise::block_absmax;
    use super::super::codes::Quantizer;
    use super::for_each_block;

    /// The sorted-position -> code table as a `pshufb` operand, or `None` when it is the
    /// identity (NF4).
    #[target_feature(enable = "avx2")]
    fn byte_remap(q: &Quantizer) -> Option<__m128i> {
        let identity: [u8; 16] = std::array::from_fn(|i| i as u8);
        // SAFETY: `q.remap` is 16 readable bytes.
        (q.remap != identity).then(|| unsafe { _mm_loadu_si128(q.remap.as_ptr().cast()) })
    }

    /// Packs 32 sorted positions (i32 lanes, element order) into 16 bytes of codes.
    #[target_feature(enable = "avx2")]
    fn pack32_avx2(c: [__m256i; 4], remap: Option<__m256i>) -> __m128i {
        let p01 = _mm256_packs_epi32(c[0], c[1]);
        let p23 = _mm256_packs_epi32(c[2], c[3]);
        let bytes = _mm256_packus_epi16(p01, p23);
        let mut bytes =
            _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if let Some(t) = remap {
            bytes = _mm256_shuffle_epi8(t, bytes);
        }
        let pairs = _mm256_or_si256(_mm256_slli_epi16(bytes, 4), _mm256_srli_epi16(bytes, 8));
        let pairs = _mm256_and_si256(pairs, _mm256_set1_epi16(0x00ff));
        let packed = _mm256_packus_epi16(pairs, pairs);
        _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0b1000))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn full_blocks_avx2(
        q: &Quantizer,
        x: &[f32],
        block_size: usize,
        packed: &mut [u8],
        absmax: &mut [f32],
    ) {
        let b = &q.bounds;
        let b7 = _mm256_set1_ps(b[7]);
        let b3 = _mm256_set1_ps(b[3]);
        let b11 = _mm256_set1_ps(b[11]);
        let t3 = _mm256_setr_ps(b[1], b[5], b[9], b[13], 0.0, 0.0, 0.0, 0.0);
        let t4 = _mm256_setr_ps(b[0], b[2], b[4], b[6], b[8], b[10], b[12], b[14]);
        let remap = byte_remap(q).map(|r| _mm256_set_m128i(r, r));
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let bit =
            |m: __m256, v: i32| _mm256_and_si256(_mm256_castps_si256(m), _mm256_set1_epi32(v));

        let absmax_of = |xb: &[f32]| {
            let mut mx = _mm256_setzero_ps();
            let mut nan = _mm256_setzero_ps();
            for c in xb.chunks_exact(8) {
                // SAFETY: `c` holds 8 f32.
                let v = _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs_mask);
                mx = _mm256_max_ps(mx, v);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            }
            if _mm256_movemask_ps(nan) != 0 {
                return block_absmax(xb);
            }
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mx) };
            lanes.into_iter().fold(0.0f32, f32::max)
        };
        for_each_block(x, block_size, packed, absmax, absmax_of, |xc, r, pc| {
            let r = _mm256_set1_ps(r);
            let pos: [__m256i; 4] = std::array::from_fn(|k| {
                // SAFETY: `xc` holds 32 f32, so 8 from `8 * k`.
                let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(xc.as_ptr().add(8 * k)) }, r);
                let m1 = _mm256_cmp_ps::<_CMP_NGE_UQ>(b7, v);
                let idx = bit(m1, 8);
                let m2 = _mm256_cmp_ps::<_CMP_NGE_UQ>(_mm256_blendv_ps(b3, b11, m1), v);
                let idx = _mm256_or_si256(idx, bit(m2, 4));
                let t = _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32(idx, 2));
                let idx = _mm256_or_si256(idx, bit(_mm256_cmp_ps::<_CMP_NGE_UQ>(t, v), 2));
                let t = _mm256_permutevar8x32_ps(t4, _mm256_srli_epi32(idx, 1));
                _mm256_or_si256(idx, bit(_mm256_cmp_ps::<_CMP_NGE_UQ>(t, v), 1))
            });
            // SAFETY: `pc` holds 16 bytes.
            unsafe { _mm_storeu_si128(pc.as_mut_ptr().cast(), pack32_avx2(pos, remap)) };
        });
    }

    /// Packs 32 sorted positions (two i32x16, element order) into 16 bytes of codes.
    #[target_feature(enable = "avx512f")]
    fn pack32_avx512(lo: __m512i, hi: __m512i, remap: Option<__m128i>) -> __m128i {
        let pack = |c: __m512i| {
            let mut bytes = _mm512_cvtepi32_epi8(c);
            if let Some(t) = remap {
                bytes = _mm_shuffle_epi8(t, bytes);
            }
            let pairs = _mm_or_si128(_mm_slli_epi16(bytes, 4), _mm_srli_epi16(bytes, 8));
            _mm_and_si128(pairs, _mm_set1_epi16(0x00ff))
        };
        _mm_packus_epi16(pack(lo), pack(hi))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn full_blocks_avx512(
        q: &Quantizer,
        x: &[f32],
        block_size: usize,
        packed: &mut [u8],
        absmax: &mut [f32],
    ) {
        let b = &q.bounds;
        let table = |off: usize| {
            let t: [f32; 16] = std::array::from_fn(|i| b[(i + off).min(14)]);
            // SAFETY: `t` holds 16 f32.
            unsafe { _mm512_loadu_ps(t.as_ptr()) }
        };
        let (b7, t2, t3, t4) = (_mm512_set1_ps(b[7]), table(3), table(1), table(0));
        let remap = byte_remap(q);
        let (eight, four, two, one) = (
            _mm512_set1_epi32(8),
            _mm512_set1_epi32(4),
            _mm512_set1_epi32(2),
            _mm512_set1_epi32(1),
        );
        let code = |v: __m512| {
            let idx = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask::<_CMP_NGE_UQ>(b7, v), eight);
            let m = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(_mm512_permutexvar_ps(idx, t2), v);
            let idx = _mm512_mask_add_epi32(idx, m, idx, four);
            let m = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(_mm512_permutexvar_ps(idx, t3), v);
            let idx = _mm512_mask_add_epi32(idx, m, idx, two);
            let m = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(_mm512_permutexvar_ps(idx, t4), v);
            _mm512_mask_add_epi32(idx, m, idx, one)
        };

        let absmax_of = |xb: &[f32]| {
            let mut mx = _mm512_setzero_ps();
            let mut nan: __mmask16 = 0;
            for c in xb.chunks_exact(16) {
                // SAFETY: `c` holds 16 f32.
                let v = _mm512_abs_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) });
                mx = _mm512_max_ps(mx, v);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
            if nan != 0 {
                return block_absmax(xb);
            }
            _mm512_reduce_max_ps(mx)
        };
        for_each_block(x, block_size, packed, absmax, absmax_of, |xc, r, pc| {
            let r = _mm512_set1_ps(r);
            // SAFETY: `xc` holds 32 f32.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(xc.as_ptr()),
                    _mm512_loadu_ps(xc.as_ptr().add(16)),
                )
            };
            let lo = code(_mm512_mul_ps(v0, r));
            let hi = code(_mm512_mul_ps(v1, r));
            // SAFETY: `pc` holds 16 bytes.
            unsafe { _mm_storeu_si128(pc.as_mut_ptr().cast(), pack32_avx512(lo, hi, remap)) };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::FourBit;
    use super::*;

    /// Values that stress ties, NaN, infinities, subnormals and sign handling.
    fn nasty(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mids: Vec<f32> = [FourBit::Nf4, FourBit::Fp4]
            .iter()
            .flat_map(|&k| Quantizer::get(k).bounds)
            .collect();
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (s >> 33) as u32;
                match r % 16 {
                    0 => mids[(r as usize / 16) % mids.len()],
                    1 => f32::from_bits(mids[(r as usize / 16) % mids.len()].to_bits() + 1),
                    2 => -mids[(r as usize / 16) % mids.len()],
                    3 if i % 997 == 0 => f32::NAN,
                    4 if i % 1499 == 0 => f32::INFINITY,
                    5 => 1.0,
                    6 => -1.0,
                    7 => 0.0,
                    8 => -0.0,
                    9 => f32::from_bits(r % 1000),
                    _ => (r as f32 / u32::MAX as f32 - 0.5) * 2.0,
                }
            })
            .collect()
    }

    #[test]
    fn simd_matches_scalar() {
        for kernel in [Level::Avx2, Level::Avx512] {
            if !kernel.is_supported() {
                eprintln!("skipping {kernel:?}: not available");
                continue;
            }
            for kind in [FourBit::Nf4, FourBit::Fp4] {
                for bs in [32, 64, 128, 4096] {
                    let x = nasty(8192 + 4 * bs, bs as u64);
                    let q = Quantizer::get(kind);
                    let (mut p0, mut a0) = (vec![0; x.len() / 2], vec![0.0; x.len() / bs]);
                    let (mut p1, mut a1) = (p0.clone(), a0.clone());
                    full_blocks(Level::Scalar, q, &x, bs, &mut p0, &mut a0);
                    full_blocks(kernel, q, &x, bs, &mut p1, &mut a1);
                    assert_eq!(p0, p1, "{kernel:?} {kind:?} {bs}");
                    let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a0), bits(&a1), "{kernel:?} {kind:?} {bs}");
                }
            }
        }
    }
}

//! Double quantization of the per-block absmax values (bitsandbytes `compress_statistics`).
//!
//! bitsandbytes computes `offset = absmax.mean()` (see [`super::torch_mean`]) and quantizes
//! `absmax - offset` with its CPU 8-bit `quantize_blockwise` (blocks of 256, signed dynamic
//! map). That CPU kernel (bitsandbytes 0.50, `csrc/cpu_ops.cpp`) is not an exact nearest-entry
//! search: it scales by `1 / absmax`, maps the clamped value to one of 65536 evenly spaced
//! points, `trunc(fma((v + 1) * 0.5, 65535, 0.5))`, and takes the code precomputed for that
//! point (the number of map midpoints strictly below `-1 + 2i / 65535`). An all-zero block gets
//! absmax 0 and code 0; NaN inputs are skipped by the absmax and get code 0.

use super::codes::dynamic_map_signed;
use super::torch_mean::torch_mean;

/// Block size of the nested (second-level) quantization.
pub const NESTED_BLOCK: usize = 256;

/// Double-quantized absmax values.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    /// One 8-bit dynamic-map code per absmax value.
    pub codes: Vec<u8>,
    /// One f32 scale per `nested_block` codes.
    pub nested_absmax: Vec<f32>,
    /// Mean of the original absmax values, added back on dequantization.
    pub offset: f32,
    /// Nested block size (always [`NESTED_BLOCK`]).
    pub nested_block: usize,
}

/// Double-quantizes `absmax` as bitsandbytes does with torch running on one thread.
///
/// Equals [`double_quantize_with_threads`]`(absmax, 1)`; the thread count only matters for
/// 32768 or more absmax values.
pub fn double_quantize(absmax: &[f32]) -> DoubleQuant {
    double_quantize_with_threads(absmax, 1)
}

/// Double-quantizes `absmax`, computing the offset as torch's `mean()` does with
/// `torch_threads` intra-op threads (`torch.get_num_threads()` at quantization time).
pub fn double_quantize_with_threads(absmax: &[f32], torch_threads: usize) -> DoubleQuant {
    let offset = torch_mean(absmax, torch_threads);
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let mut codes = vec![0u8; absmax.len()];
    let mut nested_absmax = vec![0.0f32; absmax.len().div_ceil(NESTED_BLOCK)];
    quantize_dynamic_blockwise(&centered, &mut codes, &mut nested_absmax);
    DoubleQuant {
        codes,
        nested_absmax,
        offset,
        nested_block: NESTED_BLOCK,
    }
}

/// Recovers the absmax values: `map[code] * nested_absmax[i / 256] + offset`, rounded after
/// the product and after the sum (bitsandbytes' `dequantize_blockwise` then `+= offset`).
///
/// # Panics
/// If `out` is shorter than `dq.codes`.
pub fn double_dequantize(dq: &DoubleQuant, out: &mut [f32]) {
    let map = dynamic_map_signed();
    let out = &mut out[..dq.codes.len()];
    for ((o, c), &scale) in out
        .chunks_mut(dq.nested_block)
        .zip(dq.codes.chunks(dq.nested_block))
        .zip(&dq.nested_absmax)
    {
        for (o, &c) in o.iter_mut().zip(c) {
            *o = map[usize::from(c)] * scale + dq.offset;
        }
    }
}

/// Midpoints of the dynamic map, `0.5 * (map[i] + map[i + 1])` in f32.
fn map_midpoints() -> [f32; 255] {
    let map = dynamic_map_signed();
    std::array::from_fn(|i| 0.5 * (map[i] + map[i + 1]))
}

/// Code of a scaled value under bitsandbytes' 65536-point CPU lookup.
fn lut_code(midpoints: &[f32; 255], v: f32) -> u8 {
    // Like std::clamp(v, -1, 1), NaN passes through.
    let c = v.clamp(-1.0, 1.0);
    // cvttss2si then a u16 truncation; NaN and `as` both end at index 0.
    let index = ((c + 1.0) * 0.5).mul_add(65535.0, 0.5) as i32 as u16;
    let point = (2.0 * f32::from(index)) / 65535.0 - 1.0;
    midpoints.partition_point(|&m| m < point) as u8
}

/// bitsandbytes' CPU 8-bit blockwise quantization with the signed dynamic map and
/// blocks of [`NESTED_BLOCK`].
fn quantize_dynamic_blockwise(x: &[f32], codes: &mut [u8], absmax: &mut [f32]) {
    let midpoints = map_midpoints();
    for ((xb, cb), am) in x
        .chunks(NESTED_BLOCK)
        .zip(codes.chunks_mut(NESTED_BLOCK))
        .zip(absmax.iter_mut())
    {
        // std::max fold from -inf (NaN skipped), then max(0, .).
        let m = xb.iter().fold(
            f32::NEG_INFINITY,
            |m, v| if m < v.abs() { v.abs() } else { m },
        );
        let m = if 0.0 > m { 0.0 } else { m };
        *am = m;
        if m == 0.0 {
            cb.fill(0);
            continue;
        }
        let inv = 1.0 / m;
        for (c, &v) in cb.iter_mut().zip(xb) {
            *c = lut_code(&midpoints, v * inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_endpoints_and_zero() {
        let mids = map_midpoints();
        assert_eq!(lut_code(&mids, -1.0), 0);
        assert_eq!(lut_code(&mids, 1.0), 255);
        // The 65536-point grid has no point at 0: 0.0 lands on -1 + 32768 * 2 / 65535.
        assert_eq!(lut_code(&mids, 0.0), 131);
        assert_eq!(lut_code(&mids, f32::NAN), 0);
        assert_eq!(lut_code(&mids, 7.0), 255);
    }

    #[test]
    fn matches_bnb_quantize_blockwise_by_hand() {
        // bnb 0.50.2: F.quantize_blockwise(torch.tensor([0, 1, -1, 0.5, nan, 7]), blocksize=256)
        let x = [0.0, 1.0, -1.0, 0.5, f32::NAN, 7.0];
        let (mut codes, mut am) = ([0u8; 6], [0.0f32]);
        quantize_dynamic_blockwise(&x, &mut codes, &mut am);
        assert_eq!(codes, [131, 194, 60, 180, 0, 255]);
        assert_eq!(am, [7.0]);
    }

    #[test]
    fn constant_absmax_block_is_all_zero() {
        let dq = double_quantize(&[0.5; 10]);
        assert_eq!(dq.offset, 0.5);
        assert_eq!(dq.codes, vec![0; 10]);
        assert_eq!(dq.nested_absmax, vec![0.0]);
        let mut out = [0.0; 10];
        double_dequantize(&dq, &mut out);
        assert_eq!(out, [0.5; 10]);
    }

    #[test]
    fn roundtrip_is_close() {
        let absmax: Vec<f32> = (0..1000).map(|i| 0.01 + (i % 37) as f32 * 1e-3).collect();
        let dq = double_quantize(&absmax);
        assert_eq!(dq.nested_absmax.len(), 4);
        let mut out = vec![0.0; absmax.len()];
        double_dequantize(&dq, &mut out);
        for (a, b) in absmax.iter().zip(&out) {
            assert!((a - b).abs() < 2e-4, "{a} {b}");
        }
    }
}

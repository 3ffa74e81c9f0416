//! `Tensor.mean()` of a contiguous f32 CPU tensor, in torch's exact summation order.
//!
//! bitsandbytes takes the double-quantization offset as `absmax.mean()`. On the CPU torch
//! computes it as `sum / n` (f32 division), where `sum` is the cascade sum of
//! `aten/src/ATen/native/cpu/SumKernel.cpp`: 8-lane f32 vectors (the AVX2 kernel, which torch
//! also dispatches on AVX-512 machines and which the scalar build mirrors), four interleaved
//! accumulators, four cascade levels, then the scalar tail and the 8 lanes in order. Inputs of
//! at least 32768 values are split into `min(threads, ceil(n / 32768))` equal chunks whose
//! partial sums are summed again the same way (`TensorIterator` two-pass reduction), so the
//! result depends on `torch.get_num_threads()` for such inputs.

/// torch's `at::internal::GRAIN_SIZE`.
const GRAIN_SIZE: usize = 32768;
/// Lanes of `Vectorized<float>` in the sum kernel.
const LANES: usize = 8;
/// Cascade levels of `multi_row_sum`.
const LEVELS: usize = 4;
/// Interleaved accumulators of `row_sum`.
const ILP: usize = 4;

fn ceil_log2(x: usize) -> u32 {
    if x <= 1 {
        0
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

fn add<const W: usize>(acc: &mut [f32; W], v: &[f32; W]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += *b;
    }
}

/// torch `row_sum` (with `multi_row_sum`) over `m` items of `W` lanes each.
fn row_sum<const W: usize>(m: usize, get: impl Fn(usize) -> [f32; W]) -> [f32; W] {
    let size_ilp = m / ILP;
    let level_power = 4.max(ceil_log2(size_ilp) / LEVELS as u32);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[[0.0f32; W]; ILP]; LEVELS];
    let load_row = |acc: &mut [[f32; W]; ILP], row: usize| {
        for (k, a) in acc.iter_mut().enumerate() {
            add(a, &get(row * ILP + k));
        }
    };
    let mut i = 0;
    while i + level_step <= size_ilp {
        for _ in 0..level_step {
            load_row(&mut acc[0], i);
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (u, l) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                add(u, l);
                *l = [0.0; W];
            }
            if i & (level_mask << (j as u32 * level_power)) != 0 {
                break;
            }
        }
    }
    for row in i..size_ilp {
        load_row(&mut acc[0], row);
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (a, u) in first[0].iter_mut().zip(level) {
            add(a, u);
        }
    }
    let [mut total, p1, p2, p3] = first[0];
    for i in size_ilp * ILP..m {
        add(&mut total, &get(i));
    }
    for p in [p1, p2, p3] {
        add(&mut total, &p);
    }
    total
}

/// One serial inner reduction (`vectorized_inner_sum` or, below 8 values, `scalar_inner_sum`).
fn inner_sum(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return row_sum::<1>(x.len(), |i| [x[i]])[0];
    }
    let vectors = x.len() / LANES;
    let lanes = row_sum::<LANES>(vectors, |i| {
        let mut v = [0.0; LANES];
        v.copy_from_slice(&x[i * LANES..(i + 1) * LANES]);
        v
    });
    let mut acc = 0.0f32;
    for &t in &x[vectors * LANES..] {
        acc += t;
    }
    for l in lanes {
        acc += l;
    }
    acc
}

/// torch's CPU `sum()` of a contiguous f32 slice, run with `threads` intra-op threads.
pub fn torch_sum(x: &[f32], threads: usize) -> f32 {
    let threads = threads.max(1);
    if x.len() < GRAIN_SIZE || threads == 1 {
        return 0.0 + inner_sum(x);
    }
    let chunks = threads.min(x.len().div_ceil(GRAIN_SIZE));
    let mut partials = vec![0.0f32; threads];
    for (p, c) in partials.iter_mut().zip(x.chunks(x.len().div_ceil(chunks))) {
        *p += inner_sum(c);
    }
    0.0 + inner_sum(&partials)
}

/// torch's CPU `mean()` of a contiguous f32 slice (`sum / n` in f32), run with `threads`
/// intra-op threads; NaN for an empty slice.
pub fn torch_mean(x: &[f32], threads: usize) -> f32 {
    torch_sum(x, threads) / x.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_are_sequential_below_eight() {
        let x = [1.0e8f32, 1.0, -1.0e8, 1.0];
        // rows of 4: size_ilp = 1 -> acc[k] = x[k]; then acc0 + acc1 + acc2 + acc3
        assert_eq!(torch_sum(&x, 1), ((1.0e8f32 + 1.0) + -1.0e8) + 1.0);
        assert!(torch_mean(&[], 1).is_nan());
    }

    #[test]
    fn exact_on_integers() {
        let x: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32).collect();
        let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
        for t in [1, 2, 3, 8] {
            assert_eq!(f64::from(torch_sum(&x, t)), exact);
        }
    }
}

//! The SIMD kernels must produce exactly the bytes of the scalar code, on any input.

use crate::codec_common::{no_imatrix, quant_codecs, quantize, Rng};
use qforge::cpu::{with_level, Level};

/// Rows of many shapes: block counts that do and do not fill the SIMD batches, and
/// values that stress every branch (zeros, constants, one sign, outliers, tiny,
/// huge, subnormal, non-finite).
fn rows(len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng(seed);
    let mut out = Vec::new();
    let gen = |r: &mut Rng, f: &dyn Fn(&mut Rng, usize) -> f32| {
        (0..len).map(|i| f(r, i)).collect::<Vec<f32>>()
    };
    out.push(gen(&mut r, &|r, _| r.normal() * 0.02));
    out.push(gen(&mut r, &|r, _| r.normal()));
    out.push(gen(&mut r, &|r, _| {
        let v = r.normal();
        v * v * v * 0.1
    }));
    out.push(gen(&mut r, &|r, _| r.uniform()));
    out.push(gen(&mut r, &|r, _| -r.uniform() - 0.5));
    out.push(gen(&mut r, &|r, i| {
        if i % 7 == 0 {
            0.0
        } else {
            r.normal()
        }
    }));
    out.push(gen(&mut r, &|r, i| {
        if (i / 16) % 3 == 0 {
            0.0
        } else {
            r.normal() * 1e-3
        }
    }));
    out.push(gen(&mut r, &|_, i| {
        if (i / 32) % 2 == 0 {
            0.25
        } else {
            -3.0
        }
    }));
    out.push(gen(&mut r, &|r, i| {
        if i % 97 == 3 {
            50.0 * r.normal()
        } else {
            r.normal() * 0.01
        }
    }));
    out.push(gen(&mut r, &|r, _| r.normal() * 1e-20));
    out.push(gen(&mut r, &|r, _| r.normal() * 1e-39));
    out.push(gen(&mut r, &|r, _| r.normal() * 1e30));
    out.push(gen(&mut r, &|r, _| (r.normal() * 4.0).round()));
    out.push(gen(&mut r, &|r, i| {
        if i % 50 == 1 {
            f32::NAN
        } else {
            r.normal()
        }
    }));
    out.push(gen(&mut r, &|r, i| {
        if i % 64 == 5 {
            f32::INFINITY
        } else {
            r.normal()
        }
    }));
    out.push(gen(&mut r, &|r, i| {
        if i % 40 == 9 {
            f32::NEG_INFINITY
        } else {
            r.normal()
        }
    }));
    // Signed zeros at the extremes: the min or max of a block is 0.0 or -0.0, whichever
    // the scalar loop met first.
    out.push(gen(&mut r, &|r, i| match i % 3 {
        0 => -0.0,
        1 => 0.0,
        _ => -r.uniform(),
    }));
    out.push(gen(&mut r, &|r, i| match i % 4 {
        0 => 0.0,
        1 => -0.0,
        _ => r.uniform(),
    }));
    out.push(gen(&mut r, &|_, i| if i % 2 == 0 { -0.0 } else { 0.0 }));
    out.push(vec![0.0; len]);
    out.push(vec![1.5; len]);
    out.push(vec![-7e-3; len]);
    out
}

fn imatrices(len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng(seed);
    vec![
        (0..len).map(|_| r.normal().powi(2) + 0.01).collect(),
        (0..len)
            .map(|i| if i % 5 == 0 { 0.0 } else { r.uniform() * 100.0 })
            .collect(),
        vec![1.0; len],
    ]
}

fn check_len(len: usize, seed: u64) {
    let xs = rows(len, seed);
    let ims = imatrices(len, seed ^ 0x55);
    for c in quant_codecs() {
        if !len.is_multiple_of(c.block_size()) {
            continue;
        }
        let none = no_imatrix(c, len);
        for (ri, x) in xs.iter().enumerate() {
            for im in std::iter::once(none.as_deref()).chain(ims.iter().map(|v| Some(&v[..]))) {
                let want = with_level(Level::Scalar, || quantize(c, x, im)).unwrap();
                for level in Level::supported().into_iter().skip(1) {
                    let got = with_level(level, || quantize(c, x, im)).unwrap();
                    if got != want {
                        let b = got
                            .chunks(c.type_size())
                            .zip(want.chunks(c.type_size()))
                            .position(|(a, b)| a != b)
                            .unwrap();
                        panic!(
                            "{} len {len} row kind {ri} imatrix {} {level:?}: block {b} differs",
                            c.name(),
                            im.is_some()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn simd_matches_scalar_256() {
    check_len(256, 1);
}

#[test]
fn simd_matches_scalar_544() {
    // 17 legacy blocks: one full batch of 16 plus a single block.
    check_len(544, 2);
}

#[test]
fn simd_matches_scalar_768() {
    // 3 super-blocks: one pair and one single.
    check_len(768, 3);
}

#[test]
fn simd_matches_scalar_4096() {
    check_len(4096, 4);
}

#[test]
fn simd_matches_scalar_random_seeds() {
    for seed in 10..20 {
        check_len(1024, seed);
    }
}

//! Hand-checked vectors and API properties.

use super::*;

fn codes(q: &Quantized4) -> Vec<u8> {
    let mut c: Vec<u8> = q.packed.iter().flat_map(|b| [b >> 4, b & 15]).collect();
    c.truncate(q.n);
    c
}

fn up(v: f32) -> f32 {
    f32::from_bits(if v > 0.0 {
        v.to_bits() + 1
    } else {
        v.to_bits() - 1
    })
}

#[test]
fn nf4_midpoints_go_to_the_lower_code() {
    let mut x = vec![0.25f32; 32];
    let head = [
        1.0,
        -1.0,
        0.0,
        -0.0,
        0.039_790_15, // midpoint of codes 7 and 8
        up(0.039_790_15),
        -0.045_525_018, // midpoint of codes 6 and 7
        up(-0.045_525_018),
        0.861_478_45, // midpoint of codes 14 and 15
        up(0.861_478_45),
        -0.848_096_4, // midpoint of codes 0 and 1
        up(-0.848_096_4),
        0.5,
    ];
    x[..head.len()].copy_from_slice(&head);
    let q = quantize_4bit(FourBit::Nf4, &x, 32);
    assert_eq!(q.absmax, [1.0]);
    let mut want = vec![10u8; 32];
    want[..13].copy_from_slice(&[15, 0, 7, 7, 7, 8, 6, 7, 14, 15, 0, 1, 12]);
    assert_eq!(codes(&q), want);
    assert_eq!(q.packed[0], 0xf0);
}

#[test]
fn fp4_codes_and_zero_handling() {
    let mut x = vec![0.0f32; 32];
    let head = [
        1.0,
        -1.0,
        0.0,
        1e-30,
        -1e-30,
        0.5,
        0.583_333_4, // midpoint of 0.5 and 2/3
        up(0.583_333_4),
        -0.002_604_166_7, // midpoint of -1/192 and 0
    ];
    x[..head.len()].copy_from_slice(&head);
    let q = quantize_4bit(FourBit::Fp4, &x, 32);
    let mut want = vec![0u8; 32];
    want[..9].copy_from_slice(&[3, 11, 0, 8, 0, 5, 5, 2, 9]);
    assert_eq!(codes(&q), want);
}

#[test]
fn zero_blocks_and_tail() {
    let q = quantize_4bit(FourBit::Nf4, &[0.0f32; 100], 64);
    // A full zero block stores 0; the ragged tail stores the 1e-38 clamp.
    assert_eq!(q.absmax, [0.0, 1e-38]);
    assert!(q.packed.iter().all(|&b| b == 0x77));
    let q = quantize_4bit(FourBit::Fp4, &[0.0f32; 100], 64);
    assert!(q.packed.iter().all(|&b| b == 0x00));
}

#[test]
fn odd_count_pads_with_zero_code() {
    let q = quantize_4bit(FourBit::Nf4, &[0.25f32, -1.5, 0.75], 64);
    assert_eq!(q.absmax, [1.5]);
    assert_eq!(q.packed, [0x90, 0xc7]);
    let q = quantize_4bit(FourBit::Fp4, &[0.25f32, -1.5, 0.75], 64);
    assert_eq!(q.packed[1] & 0x0f, 0);
}

#[test]
fn negative_absmax_and_block_4096() {
    let x: Vec<f32> = (0..4096 * 2 + 7)
        .map(|i| ((i * 37) % 101) as f32 / 100.0 - 0.5)
        .chain([-2.0])
        .collect();
    let q = quantize_4bit(FourBit::Nf4, &x, 4096);
    assert_eq!(q.absmax, [0.5, 0.5, 2.0]);
    assert_eq!(codes(&q)[x.len() - 1], 0);
    let mut out = vec![0.0; x.len()];
    dequantize_4bit(FourBit::Nf4, &q.packed, &q.absmax, 4096, x.len(), &mut out);
    for (i, (a, b)) in x.iter().zip(&out).enumerate() {
        let am = q.absmax[i / 4096];
        // Half the widest NF4 gap (-1 .. -0.696) is 0.152.
        assert!((a - b).abs() <= 0.153 * am, "{i}: {a} {b}");
    }
}

#[test]
fn nan_and_inf_do_not_panic() {
    let mut x = vec![0.1f32; 200];
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    for kind in [FourBit::Nf4, FourBit::Fp4] {
        let q = quantize_4bit(kind, &x, 32);
        assert!(q.absmax[0].is_nan());
        assert_eq!(q.absmax[1], f32::INFINITY);
        assert_eq!(q.absmax[2], 0.1);
        if kind == FourBit::Nf4 {
            assert!(codes(&q)[..32].iter().all(|&c| c == 15));
            assert_eq!(codes(&q)[32], 7); // 0.1 * (1 / inf) = 0
            assert_eq!(codes(&q)[40], 15); // inf * 0 = NaN
        }
        let dq = double_quantize(&q.absmax);
        let mut out = vec![0.0; q.absmax.len()];
        double_dequantize(&dq, &mut out);
        let mut y = vec![0.0; x.len()];
        dequantize_4bit(kind, &q.packed, &q.absmax, 32, x.len(), &mut y);
    }
}

#[test]
fn empty_input() {
    let q = quantize_4bit(FourBit::Nf4, &[] as &[f32], 64);
    assert!(q.packed.is_empty() && q.absmax.is_empty() && q.n == 0);
    let dq = double_quantize(&[]);
    assert!(dq.codes.is_empty() && dq.nested_absmax.is_empty());
}

#[test]
#[should_panic(expected = "invalid 4-bit block size")]
fn rejects_bad_block_size() {
    quantize_4bit(FourBit::Nf4, &[1.0f32; 48], 48);
}

fn sample(n: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

#[test]
fn streaming_and_parallel_match_one_call() {
    let x = sample(300_000 + 77);
    for (kind, bs) in [(FourBit::Nf4, 64), (FourBit::Fp4, 4096), (FourBit::Nf4, 32)] {
        let whole = quantize_4bit(kind, &x, bs);
        let mut packed = vec![0u8; whole.packed.len()];
        let mut absmax = vec![0f32; whole.absmax.len()];
        let piece = 3 * 4096;
        for (i, xc) in x.chunks(piece).enumerate() {
            let (p0, a0) = (i * piece / 2, i * piece / bs);
            let p = &mut packed[p0..p0 + packed_len(xc.len())];
            let a = &mut absmax[a0..a0 + num_blocks(xc.len(), bs)];
            quantize_4bit_into(kind, xc, bs, p, a);
        }
        assert_eq!(packed, whole.packed);
        assert_eq!(absmax, whole.absmax);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut p, mut a) = (vec![0u8; packed.len()], vec![0f32; absmax.len()]);
            pool.install(|| quantize_4bit_into_par(kind, &x, bs, &mut p, &mut a));
            assert_eq!(p, whole.packed);
            assert_eq!(a, whole.absmax);
            let (mut d0, mut d1) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            dequantize_4bit(kind, &p, &a, bs, x.len(), &mut d0);
            pool.install(|| dequantize_4bit_par(kind, &p, &a, bs, x.len(), &mut d1));
            assert_eq!(d0, d1);
        }
    }
}

#[test]
fn all_kernels_agree_through_public_api() {
    let x = sample(40_000 + 33);
    let reference = quantize_4bit(FourBit::Nf4, &x, 64);
    for kernel in crate::cpu::Level::ALL {
        if !kernel.is_supported() {
            continue;
        }
        let (mut p, mut a) = (
            vec![0u8; reference.packed.len()],
            vec![0f32; reference.absmax.len()],
        );
        quantize_4bit_into_with(kernel, FourBit::Nf4, &x, 64, &mut p, &mut a);
        assert_eq!(p, reference.packed, "{kernel:?}");
        assert_eq!(a, reference.absmax, "{kernel:?}");
    }
}

#[test]
fn half_inputs_widen_exactly() {
    let x = sample(10_000 + 1);
    let h: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let widened: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    assert_eq!(
        quantize_4bit(FourBit::Fp4, &h, 128),
        quantize_4bit(FourBit::Fp4, &widened, 128)
    );
}

#[test]
fn fp4_code_8_dequantizes_to_negative_zero() {
    let mut out = [1.0f32; 2];
    dequantize_4bit(FourBit::Fp4, &[0x80], &[3.0], 64, 2, &mut out);
    assert_eq!(out[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(out[1].to_bits(), 0.0f32.to_bits());
    assert_eq!(code_table(FourBit::Fp4)[8].to_bits(), 0.0f32.to_bits());
}

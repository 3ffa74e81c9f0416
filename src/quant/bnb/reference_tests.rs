//! Byte-for-byte comparison with bitsandbytes 0.50.2 output recorded in
//! `fixtures/bnb/golden.bin` (written by `scripts/bnb_reference.py`, format in
//! `fixtures/bnb/README.md`).

use super::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bnb/golden.bin");

struct Reader {
    data: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }
    fn f32s(&mut self) -> Vec<f32> {
        let n = self.u32() as usize;
        (0..n).map(|_| self.f32()).collect()
    }
}

fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hash_f32(x: &[f32]) -> u64 {
    fnv1a64(x.iter().flat_map(|v| v.to_le_bytes()))
}

/// Hash of dequantized values with -0.0 folded into +0.0 and NaNs into `0xffff_ffff`
/// (see the script's `hz`).
fn hash_deq(x: &[f32]) -> u64 {
    fnv1a64(
        bits_any_nan(&x.iter().map(|v| v + 0.0).collect::<Vec<_>>())
            .into_iter()
            .flat_map(u32::to_le_bytes),
    )
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Bits with every NaN folded into one pattern: Rust does not pin the payload of a NaN
/// produced by adding two NaNs (LLVM may commute the operands), which only arises in the
/// mean of absmax values that are already NaN.
fn bits_any_nan(x: &[f32]) -> Vec<u32> {
    x.iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

fn kind(b: u8) -> FourBit {
    [FourBit::Nf4, FourBit::Fp4][usize::from(b)]
}

/// The script's `splitmix_tensor`.
fn splitmix_tensor(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = (i as u64 + (seed << 32) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let mant = (z >> 40) as i64 - (1 << 23);
            let shift = (i >> 12) % 8;
            mant as f32 * 2f32.powi(-23) * 2f32.powi(-(shift as i32))
        })
        .collect()
}

/// Checks the 16-bit input records (the first tensor widened to bf16 / f16); returns the count.
fn splitmix_free_normal(r: &mut Reader) -> usize {
    let mut fresh = Reader {
        data: r.data.clone(),
        pos: 8,
    };
    for _ in 0..3 {
        fresh.f32s();
    }
    fresh.u32();
    let name_len = usize::from(fresh.u8());
    fresh.take(name_len);
    let x = fresh.f32s();
    let count = r.u32() as usize;
    for _ in 0..count {
        let (dtype, k) = (r.u8(), kind(r.u8()));
        let q = match dtype {
            0 => quantize_4bit(
                k,
                &x.iter()
                    .map(|&v| half::bf16::from_f32(v))
                    .collect::<Vec<_>>(),
                64,
            ),
            _ => quantize_4bit(
                k,
                &x.iter()
                    .map(|&v| half::f16::from_f32(v))
                    .collect::<Vec<_>>(),
                64,
            ),
        };
        assert_eq!(
            fnv1a64(q.packed.iter().copied()),
            r.u64(),
            "packed: dtype {dtype} {k:?}"
        );
        assert_eq!(hash_f32(&q.absmax), r.u64(), "absmax: dtype {dtype} {k:?}");
    }
    count
}

fn dequant(k: FourBit, packed: &[u8], absmax: &[f32], bs: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_4bit(k, packed, absmax, bs, n, &mut out);
    out
}

#[test]
fn reproduces_bitsandbytes_fixture() {
    let data = std::fs::read(FIXTURE).expect("fixtures/bnb/golden.bin");
    let mut r = Reader { data, pos: 0 };
    assert_eq!(r.take(8), b"BNBFIX01");
    assert_eq!(bits(&r.f32s()), bits(&dynamic_map_signed()), "dynamic map");
    assert_eq!(
        bits(&r.f32s()),
        bits(&code_table(FourBit::Nf4)),
        "NF4 table"
    );
    assert_eq!(
        bits(&r.f32s()),
        bits(&code_table(FourBit::Fp4)),
        "FP4 table"
    );

    let mut checked = 0;
    for _ in 0..r.u32() {
        let name_len = usize::from(r.u8());
        let name = String::from_utf8(r.take(name_len).to_vec()).unwrap();
        let x = r.f32s();
        for _ in 0..r.u32() {
            let k = kind(r.u8());
            let bs = r.u32() as usize;
            let ctx = format!("{name} {k:?} bs={bs}");
            let q = quantize_4bit(k, &x, bs);
            let (packed, absmax) = (r.bytes(), r.f32s());
            assert_eq!(q.packed, packed, "packed: {ctx}");
            assert_eq!(bits(&q.absmax), bits(&absmax), "absmax: {ctx}");
            for kernel in crate::cpu::Level::ALL {
                if kernel.is_supported() {
                    let (mut p, mut a) = (vec![0; packed.len()], vec![0.0; absmax.len()]);
                    quantize_4bit_into_with(kernel, k, &x, bs, &mut p, &mut a);
                    assert_eq!(p, packed, "packed: {ctx} {kernel:?}");
                    assert_eq!(bits(&a), bits(&absmax), "absmax: {ctx} {kernel:?}");
                }
            }
            let deq = dequant(k, &q.packed, &q.absmax, bs, x.len());
            assert_eq!(hash_deq(&deq), r.u64(), "dequantized: {ctx}");

            let dq = double_quantize(&q.absmax);
            assert_eq!(dq.codes, r.bytes(), "double-quant codes: {ctx}");
            assert_eq!(
                bits(&dq.nested_absmax),
                bits(&r.f32s()),
                "nested absmax: {ctx}"
            );
            assert_eq!(
                bits_any_nan(&[dq.offset]),
                bits_any_nan(&[r.f32()]),
                "offset: {ctx}"
            );
            let mut absmax2 = vec![0.0; q.absmax.len()];
            double_dequantize(&dq, &mut absmax2);
            assert_eq!(
                bits_any_nan(&absmax2),
                bits_any_nan(&r.f32s()),
                "double-dequantized absmax: {ctx}"
            );
            let deq2 = dequant(k, &q.packed, &absmax2, bs, x.len());
            assert_eq!(hash_deq(&deq2), r.u64(), "dequantized (nested): {ctx}");
            checked += 1;
        }
    }

    for _ in 0..r.u32() {
        let (n, seed) = (r.u32() as usize, u64::from(r.u32()));
        let (k, bs, threads) = (kind(r.u8()), r.u32() as usize, r.u32() as usize);
        let ctx = format!("splitmix n={n} seed={seed} {k:?} bs={bs} threads={threads}");
        let x = splitmix_tensor(n, seed);
        let q = quantize_4bit(k, &x, bs);
        let dq = double_quantize_with_threads(&q.absmax, threads);
        assert_eq!(dq.offset.to_bits(), r.f32().to_bits(), "offset: {ctx}");
        assert_eq!(fnv1a64(q.packed.iter().copied()), r.u64(), "packed: {ctx}");
        assert_eq!(hash_f32(&q.absmax), r.u64(), "absmax: {ctx}");
        assert_eq!(fnv1a64(dq.codes.iter().copied()), r.u64(), "codes: {ctx}");
        assert_eq!(hash_f32(&dq.nested_absmax), r.u64(), "nested: {ctx}");
        checked += 1;
    }
    let normal = splitmix_free_normal(&mut r);
    assert_eq!(r.pos, r.data.len(), "trailing fixture bytes");
    assert!(normal >= 4, "{normal} 16-bit records");
    assert!(checked >= 48, "{checked} records");
}

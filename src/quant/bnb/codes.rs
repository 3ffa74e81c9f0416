//! Code tables: the NF4 and FP4 4-bit tables, their quantization bounds, and
//! bitsandbytes' signed 8-bit dynamic map.

use super::FourBit;

/// NF4 values, index -> value (bitsandbytes `get_4bit_type("nf4")`).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 (e2m1 variant) values, index -> value (bitsandbytes `get_4bit_type("fp4")`:
/// `[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...]` divided by 12 in f32). Both zeros are `+0.0`.
pub const FP4: [f32; 16] = [
    0.0,
    0.005_208_333_5,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    0.0,
    -0.005_208_333_5,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

/// FP4 values used for dequantization: as [`FP4`] but code 8 is `-0.0`, like bitsandbytes'
/// C++ CPU and CUDA kernels (its torch fallback, used for odd sizes, gives `+0.0`).
pub const FP4_DEQUANT: [f32; 16] = {
    let mut t = FP4;
    t[8] = -0.0;
    t
};

/// Stable ascending argsort of [`FP4`] (torch's `argsort`): sorted position -> code.
const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

/// `create_dynamic_map(signed=True)` as f32 bit patterns, exactly as torch builds it
/// on x86 with AVX2/AVX-512 (torch's scalar-only build differs by 1 ulp in 42 entries).
const DYNAMIC_MAP_SIGNED_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), sorted.
pub fn dynamic_map_signed() -> [f32; 256] {
    DYNAMIC_MAP_SIGNED_BITS.map(f32::from_bits)
}

/// The 16 dequantization values of a 4-bit type, index -> value.
pub fn code_table(kind: FourBit) -> [f32; 16] {
    match kind {
        FourBit::Nf4 => NF4,
        FourBit::Fp4 => FP4,
    }
}

/// Nearest-code search data for one 4-bit type, as bitsandbytes' CPU path builds it.
///
/// `bounds[k]` is the f32 midpoint `(s[k] + s[k + 1]) / 2` of the sorted code values `s`;
/// the sorted position of a scaled value `v` is the number of bounds `b` with `!(b >= v)`
/// (`torch.bucketize`, right=False: a value on a midpoint takes the lower code, NaN the
/// top one), and `remap` turns a sorted position into the code.
#[derive(Debug, Clone, Copy)]
pub struct Quantizer {
    /// Ascending midpoints between consecutive sorted code values.
    pub bounds: [f32; 15],
    /// Sorted position -> 4-bit code.
    pub remap: [u8; 16],
}

const fn quantizer(table: &[f32; 16], order: &[u8; 16]) -> Quantizer {
    let mut bounds = [0.0f32; 15];
    let mut k = 0;
    while k < 15 {
        bounds[k] = (table[order[k] as usize] + table[order[k + 1] as usize]) / 2.0;
        k += 1;
    }
    Quantizer {
        bounds,
        remap: *order,
    }
}

const IDENTITY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
static NF4_QUANTIZER: Quantizer = quantizer(&NF4, &IDENTITY);
static FP4_QUANTIZER: Quantizer = quantizer(&FP4, &FP4_ORDER);

impl Quantizer {
    /// The quantizer for `kind`.
    pub fn get(kind: FourBit) -> &'static Quantizer {
        match kind {
            FourBit::Nf4 => &NF4_QUANTIZER,
            FourBit::Fp4 => &FP4_QUANTIZER,
        }
    }

    /// Sorted position (0..=15) of an already scaled value: the number of bounds `b` with
    /// `!(b >= v)`, found by a branch-free 4-step binary search (the test is monotone in `b`,
    /// and true for every bound when `v` is NaN).
    // `!(b >= v)` on purpose: it is torch.bucketize's test, which also sends NaN to 15.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    #[inline(always)]
    pub fn position(&self, v: f32) -> u8 {
        let b = &self.bounds;
        let mut i = 8 * usize::from(!(b[7] >= v));
        i += 4 * usize::from(!(b[i + 3] >= v));
        i += 2 * usize::from(!(b[i + 1] >= v));
        i += usize::from(!(b[i] >= v));
        i as u8
    }

    /// 4-bit code of an already scaled value.
    #[inline(always)]
    pub fn code(&self, v: f32) -> u8 {
        self.remap[usize::from(self.position(v))]
    }

    /// Code used to pad an odd element count (bitsandbytes pads the scaled values with 0.0).
    pub fn pad_code(&self) -> u8 {
        self.code(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp4_order_is_stable_argsort() {
        let mut idx: Vec<u8> = (0..16).collect();
        idx.sort_by(|&a, &b| FP4[a as usize].total_cmp(&FP4[b as usize]).then(a.cmp(&b)));
        assert_eq!(idx, FP4_ORDER);
    }

    #[test]
    fn dynamic_map_shape() {
        let m = dynamic_map_signed();
        assert!(m.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(m[127], 0.0);
        assert_eq!(m[255], 1.0);
        assert_eq!(m[0], -0.992_968_75);
    }

    #[test]
    fn nf4_literals_match_readme() {
        let readme = [
            -1.0f64,
            -0.6961928009986877,
            -0.5250730514526367,
            -0.39491748809814453,
            -0.28444138169288635,
            -0.18477343022823334,
            -0.09105003625154495,
            0.0,
            0.07958029955625534,
            0.16093020141124725,
            0.24611230194568634,
            0.33791524171829224,
            0.44070982933044434,
            0.5626170039176941,
            0.7229568362236023,
            1.0,
        ];
        for (a, b) in NF4.iter().zip(readme) {
            assert_eq!(a.to_bits(), (b as f32).to_bits());
        }
    }

    #[test]
    fn binary_search_equals_count() {
        for kind in [FourBit::Nf4, FourBit::Fp4] {
            let q = Quantizer::get(kind);
            let mut probes = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
            for &b in &q.bounds {
                probes.extend([b, f32::from_bits(b.to_bits() + 1), -b]);
                probes.push(f32::from_bits(b.to_bits().wrapping_sub(1)));
            }
            probes.extend((0..=2000).map(|i| i as f32 / 1000.0 - 1.0));
            for v in probes {
                let count = q.bounds.iter().filter(|&&b| b < v || v.is_nan()).count() as u8;
                assert_eq!(q.position(v), count, "{kind:?} {v}");
            }
        }
    }

    #[test]
    fn pad_codes() {
        assert_eq!(Quantizer::get(FourBit::Nf4).pad_code(), 7);
        assert_eq!(Quantizer::get(FourBit::Fp4).pad_code(), 0);
    }
}

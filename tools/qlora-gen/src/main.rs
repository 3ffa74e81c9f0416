//! Writes small QNAT files with the real qlora-rs (the version is the one in the
//! Cargo.toml that builds this file) and, next to each, qlora-rs's own decode of every
//! tensor, so that qforge's reader can be compared with it.
//!
//! Usage: `qlora-gen OUT_DIR`. For each file `NAME.qnat` it writes
//! `NAME.expected.safetensors` (f32): `TENSOR` is qlora-rs's `dequantize_nf4` of the
//! tensor as qlora-rs holds it in memory before export (for double-quantized tensors that
//! uses the u8 "stored" scales), and, where qlora-rs keeps the exact f32 scales beside the
//! u8 copy (1.0.x), `TENSOR@exact` is the same decode with those f32 scales.
//!
//! qlora-rs packs every block on its own (ceil(B/2) bytes, first element in the low
//! nibble) but its `dequantize_nf4` indexes bytes as `block * B / 2`, which is only right
//! for even B; for odd B the expected values are `dequantize_nf4` of each block on its own
//! (a one-block tensor), i.e. qlora-rs's decode of what its encoder wrote.

use candle_core::{Device, Tensor};
use qlora_rs::native::{export_native, NativeMetadata};
use qlora_rs::quantization::{
    dequantize_nf4, quantize_nf4_with_config, ComputeDType, QuantizationConfig,
    QuantizationStrategy, QuantizedTensor,
};
use std::collections::HashMap;
use std::path::Path;

/// Deterministic pseudo-normal values (xorshift64*, sum of four uniforms).
fn values(n: usize, seed: u64, shift: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| uniform()).sum::<f32>() - 2.0;
            u * 0.05 + shift
        })
        .collect()
}

struct Case {
    name: &'static str,
    shape: &'static [usize],
    block: usize,
    double_quant: bool,
    zero_point: bool,
    per_channel: bool,
    shift: f32,
}

const CASES: &[Case] = &[
    Case {
        name: "plain_b64",
        shape: &[4, 64],
        block: 64,
        double_quant: false,
        zero_point: false,
        per_channel: false,
        shift: 0.0,
    },
    Case {
        name: "b50",
        shape: &[3, 50],
        block: 50,
        double_quant: false,
        zero_point: false,
        per_channel: false,
        shift: 0.0,
    },
    Case {
        name: "b7",
        shape: &[4, 21],
        block: 7,
        double_quant: false,
        zero_point: false,
        per_channel: false,
        shift: 0.0,
    },
    Case {
        name: "zp_b32",
        shape: &[2, 64],
        block: 32,
        double_quant: false,
        zero_point: true,
        per_channel: false,
        shift: 0.03,
    },
    Case {
        name: "dq_b64",
        shape: &[8, 64],
        block: 64,
        double_quant: true,
        zero_point: false,
        per_channel: false,
        shift: 0.0,
    },
    Case {
        name: "dq_zp_b16",
        shape: &[4, 32],
        block: 16,
        double_quant: true,
        zero_point: true,
        per_channel: false,
        shift: 0.02,
    },
    Case {
        name: "pc_50",
        shape: &[3, 50],
        block: 0,
        double_quant: false,
        zero_point: false,
        per_channel: true,
        shift: 0.0,
    },
    Case {
        name: "pc_dq_7",
        shape: &[5, 7],
        block: 0,
        double_quant: true,
        zero_point: false,
        per_channel: true,
        shift: 0.0,
    },
    Case {
        name: "dq_b7",
        shape: &[3, 14],
        block: 7,
        double_quant: true,
        zero_point: false,
        per_channel: false,
        shift: 0.0,
    },
];

fn quantize(case: &Case, seed: u64) -> QuantizedTensor {
    let n: usize = case.shape.iter().product();
    let mut v = values(n, seed, case.shift);
    if case.name == "plain_b64" {
        v[64..128].iter_mut().for_each(|x| *x = 0.0); // an all-zero block: scale 1.0
    }
    let t = Tensor::from_vec(v, case.shape, &Device::Cpu).unwrap();
    let cfg = QuantizationConfig {
        block_size: if case.per_channel { 64 } else { case.block },
        double_quant: case.double_quant,
        compute_dtype: ComputeDType::F32,
        strategy: if case.per_channel {
            QuantizationStrategy::PerChannel
        } else {
            QuantizationStrategy::PerTensor
        },
        use_zero_point: case.zero_point,
    };
    quantize_nf4_with_config(&t, &cfg).unwrap()
}

fn flat(q: &QuantizedTensor) -> Vec<f32> {
    dequantize_nf4(q, &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// qlora-rs's decode of `q`; block by block when the block size is odd (see the top).
fn decode(q: &QuantizedTensor) -> Vec<f32> {
    let b = q.block_size;
    let hb = b.div_ceil(2);
    let nb = q.numel() / b;
    let per_block: Vec<f32> = (0..nb)
        .flat_map(|i| {
            let one = QuantizedTensor {
                data: q.data[i * hb..(i + 1) * hb].to_vec(),
                scales: q.scales.get(i).map(|s| vec![*s]).unwrap_or_default(),
                zero_points: q.zero_points.as_ref().map(|z| vec![z[i]]),
                scales_quantized: q.scales_quantized.as_ref().map(|s| vec![s[i]]),
                scales_scales: q.scales_scales.clone(),
                shape: vec![b],
                block_size: b,
                double_quant_enabled: q.double_quant_enabled,
                strategy: QuantizationStrategy::PerTensor,
            };
            flat(&one)
        })
        .collect();
    if b % 2 == 0 {
        let whole = flat(q);
        assert_eq!(
            whole, per_block,
            "even block size: whole and per-block decode agree"
        );
        whole
    } else {
        per_block
    }
}

fn write(dir: &Path, file: &str, names: &[&str], meta: Option<NativeMetadata>) {
    let qs: Vec<(&str, QuantizedTensor)> = names
        .iter()
        .map(|n| {
            let (i, case) = CASES
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == *n)
                .unwrap();
            (case.name, quantize(case, 17 + i as u64))
        })
        .collect();
    let refs: Vec<(&str, &QuantizedTensor)> = qs.iter().map(|(n, q)| (*n, q)).collect();
    export_native(&refs, meta, dir.join(format!("{file}.qnat"))).unwrap();
    let mut expected = HashMap::new();
    for (name, q) in &qs {
        let n = q.numel();
        expected.insert(
            name.to_string(),
            Tensor::from_vec(decode(q), n, &Device::Cpu).unwrap(),
        );
        if q.double_quant_enabled && !q.scales.is_empty() {
            let mut exact = q.clone_plain();
            exact.double_quant_enabled = false;
            expected.insert(
                format!("{name}@exact"),
                Tensor::from_vec(decode(&exact), n, &Device::Cpu).unwrap(),
            );
        }
    }
    candle_core::safetensors::save(&expected, dir.join(format!("{file}.expected.safetensors")))
        .unwrap();
}

/// `QuantizedTensor` is not `Clone` in every qlora-rs version.
trait ClonePlain {
    fn clone_plain(&self) -> QuantizedTensor;
}
impl ClonePlain for QuantizedTensor {
    fn clone_plain(&self) -> QuantizedTensor {
        QuantizedTensor {
            data: self.data.clone(),
            scales: self.scales.clone(),
            zero_points: self.zero_points.clone(),
            scales_quantized: self.scales_quantized.clone(),
            scales_scales: self.scales_scales.clone(),
            shape: self.shape.clone(),
            block_size: self.block_size,
            double_quant_enabled: self.double_quant_enabled,
            strategy: self.strategy,
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: qlora-gen OUT_DIR");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let all: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    write(
        dir,
        "mixed",
        &all,
        Some(NativeMetadata {
            model_name: "qlora-gen-mixed".into(),
            model_type: "llama".into(),
            compute_dtype: ComputeDType::BF16,
        }),
    );
    write(dir, "plain", &["plain_b64"], None);
    write(dir, "dq-last", &["b50", "dq_b64"], None);
    write(dir, "zp-last", &["plain_b64", "zp_b32"], None);
}

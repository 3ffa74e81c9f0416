//! Byte-for-byte comparison with ggml's own output (fixtures/golden: 64 rows x 512 of
//! input.f32, imatrix.f32, and `<TYPE>[.imatrix].bin` from `ggml_quantize_chunk`).

use qforge::cpu::{with_level, Level};
use qforge::formats::ggml_type::GgmlType;
use qforge::quant::ggml::Codec;

const ROWS: usize = 64;
const COLS: usize = 512;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/fixtures/golden/ggml/{}",
        env!("CARGO_MANIFEST_DIR"),
        name
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn input() -> Vec<f32> {
    let v = f32s(&fixture("input.f32"));
    assert_eq!(v.len(), ROWS * COLS);
    v
}

fn imatrix() -> Vec<f32> {
    let v = f32s(&fixture("imatrix.f32"));
    assert_eq!(v.len(), COLS);
    v
}

/// Quantize all rows the way `ggml_quantize_chunk` does.
fn quantize_all(c: &Codec, src: &[f32], imatrix: Option<&[f32]>) -> Vec<u8> {
    let row_bytes = COLS / c.block_size() * c.type_size();
    let mut out = vec![0u8; ROWS * row_bytes];
    for (x, y) in src.chunks_exact(COLS).zip(out.chunks_exact_mut(row_bytes)) {
        (c.quantize_row)(x, y, imatrix);
    }
    out
}

/// Describe the first mismatching block, if any.
fn first_mismatch(c: &Codec, got: &[u8], want: &[u8]) -> Option<String> {
    assert_eq!(got.len(), want.len(), "{}: size", c.name());
    let nblk_row = COLS / c.block_size();
    let mut count = 0;
    let mut first = None;
    for (b, (g, w)) in got
        .chunks_exact(c.type_size())
        .zip(want.chunks_exact(c.type_size()))
        .enumerate()
    {
        if g != w {
            count += 1;
            if first.is_none() {
                let byte = g.iter().zip(w).position(|(a, b)| a != b).unwrap();
                first = Some(format!(
                    "{}: block {} (row {}, block {} in row), first differing byte {}\n got  {:02x?}\n want {:02x?}",
                    c.name(),
                    b,
                    b / nblk_row,
                    b % nblk_row,
                    byte,
                    g,
                    w
                ));
            }
        }
    }
    first.map(|f| format!("{f}\n{count} mismatching blocks in total"))
}

fn check(ty: GgmlType, with_imatrix: bool) {
    let c = ty.codec().expect("codec");
    let x = input();
    let im = imatrix();
    // ggml_quantize_chunk takes one imatrix row (per column) for all rows.
    let qw = im;
    let file = if with_imatrix {
        format!("{}.imatrix.bin", c.name())
    } else {
        format!("{}.bin", c.name())
    };
    let want = fixture(&file);
    // Every kernel level this CPU has must reproduce ggml.
    for level in Level::supported() {
        let got = with_level(level, || {
            quantize_all(c, &x, with_imatrix.then_some(&qw[..]))
        })
        .unwrap();
        if let Some(m) = first_mismatch(c, &got, &want) {
            panic!("{file} ({level:?} kernels): {m}");
        }
    }
}

macro_rules! golden {
    ($name:ident, $ty:ident, $im:expr) => {
        #[test]
        fn $name() {
            check(GgmlType::$ty, $im);
        }
    };
}

golden!(q4_0, Q4_0, false);
golden!(q4_0_imatrix, Q4_0, true);
golden!(q4_1, Q4_1, false);
golden!(q4_1_imatrix, Q4_1, true);
golden!(q5_0, Q5_0, false);
golden!(q5_0_imatrix, Q5_0, true);
golden!(q5_1, Q5_1, false);
golden!(q5_1_imatrix, Q5_1, true);
golden!(q8_0, Q8_0, false);
golden!(q2_k, Q2_K, false);
golden!(q2_k_imatrix, Q2_K, true);
golden!(q3_k, Q3_K, false);
golden!(q3_k_imatrix, Q3_K, true);
golden!(q4_k, Q4_K, false);
golden!(q4_k_imatrix, Q4_K, true);
golden!(q5_k, Q5_K, false);
golden!(q5_k_imatrix, Q5_K, true);
golden!(q6_k, Q6_K, false);
golden!(q6_k_imatrix, Q6_K, true);
golden!(iq3_xxs, IQ3_XXS, false);
golden!(iq3_xxs_imatrix, IQ3_XXS, true);
golden!(iq4_nl, IQ4_NL, false);
golden!(iq4_nl_imatrix, IQ4_NL, true);
golden!(iq4_xs, IQ4_XS, false);
golden!(iq4_xs_imatrix, IQ4_XS, true);
golden!(tq1_0, TQ1_0, false);
golden!(tq2_0, TQ2_0, false);
golden!(mxfp4, MXFP4, false);
golden!(q1_0, Q1_0, false);
golden!(q2_0, Q2_0, false);
// ggml quantizes IQ2_XXS, IQ2_XS and IQ1_S only with importance weights.
golden!(iq2_xxs_imatrix, IQ2_XXS, true);
golden!(iq2_xs_imatrix, IQ2_XS, true);
golden!(iq2_s, IQ2_S, false);
golden!(iq2_s_imatrix, IQ2_S, true);
golden!(iq1_s_imatrix, IQ1_S, true);
golden!(iq1_m, IQ1_M, false);
golden!(iq1_m_imatrix, IQ1_M, true);
golden!(iq3_s, IQ3_S, false);
golden!(iq3_s_imatrix, IQ3_S, true);

/// Q8_0, the ternary types, MXFP4, Q1_0 and Q2_0 ignore the importance weights: with
/// them each must still match its `<TYPE>.bin` (ggml's generator writes no `.imatrix`
/// file for them).
#[test]
fn types_that_ignore_the_imatrix() {
    use GgmlType as T;
    for ty in [T::Q8_0, T::TQ1_0, T::TQ2_0, T::MXFP4, T::Q1_0, T::Q2_0] {
        let c = ty.codec().unwrap();
        let got = quantize_all(c, &input(), Some(&imatrix()));
        if let Some(m) = first_mismatch(c, &got, &fixture(&format!("{}.bin", c.name()))) {
            panic!("with an imatrix: {m}");
        }
    }
}

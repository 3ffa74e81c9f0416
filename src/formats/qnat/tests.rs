//! Round trips, alignment, tamper detection, truncation, hostile sizes, writer misuse,
//! and v1 reading and migration on files built byte for byte as qlora-rs writes them.

use super::header::Header;
use super::qlora::{self as v1, read_v1, repack_v1_codes, ScalesChoice, V1Extras, V1Resolution};
use super::*;
use crate::error::InvalidKind as K;
use crate::error::{exit_code, invalid_kind, one_line, EXIT_INVALID, EXIT_RUNTIME};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Cursor as IoCursor};

// ---------------------------------------------------------------- helpers

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

use crate::formats::{f32_le_bytes as f32_bytes, TensorSource};

/// A QNAT file opened by the real reader: its index and its mapped bytes.
fn open_qnat(path: &std::path::Path) -> anyhow::Result<(QnatIndex, TensorSource)> {
    let src = TensorSource::open(path)?;
    let index = src.qnat.clone().expect("a QNAT file");
    Ok((index, src))
}

fn model() -> ModelInfo {
    let mut kv = std::collections::BTreeMap::new();
    kv.insert("general.license".to_owned(), "apache-2.0".to_owned());
    kv.insert("llama.context_length".to_owned(), "4096".to_owned());
    ModelInfo {
        name: "tiny-llama".to_owned(),
        architecture: "llama".to_owned(),
        compute_dtype: ComputeDtype::Bf16,
        tool: "qforge 0.1.0".to_owned(),
        source: vec![SourceDigest {
            name: "model.safetensors".to_owned(),
            bytes: 1234,
            sha256: hex(&Sha256::digest(b"model")),
        }],
        kv,
        gguf: Vec::new(),
    }
}

/// A tensor to write: header, sections with their bytes, an offset set at the end.
struct Spec {
    header: TensorHeader,
    sections: Vec<(SectionRole, SectionDtype, u64, Vec<u8>)>,
    late_offset: Option<f32>,
}

fn nf4(name: &str, shape: Vec<u64>, bs: u64, seed: u64) -> Spec {
    let n: u64 = shape.iter().product();
    let blocks = n.div_ceil(bs);
    let mut codes = pseudo(n.div_ceil(2) as usize, seed);
    if n % 2 == 1 {
        *codes.last_mut().unwrap() &= 0xf0;
    }
    let absmax: Vec<f32> = (0..blocks).map(|i| 0.5 + i as f32 * 0.01).collect();
    Spec {
        header: TensorHeader::new(name, shape, Scheme::Nf4).with_block_size(bs),
        sections: vec![
            (SectionRole::Codes, SectionDtype::U4, n, codes),
            (
                SectionRole::Absmax,
                SectionDtype::F32,
                blocks,
                f32_bytes(&absmax),
            ),
        ],
        late_offset: None,
    }
}

fn four_bit_dq(
    name: &str,
    scheme: Scheme,
    shape: Vec<u64>,
    bs: u64,
    nested: u64,
    seed: u64,
) -> Spec {
    let n: u64 = shape.iter().product();
    let blocks = n.div_ceil(bs);
    let mut codes = pseudo(n.div_ceil(2) as usize, seed);
    if n % 2 == 1 {
        *codes.last_mut().unwrap() &= 0xf0;
    }
    let nested_n = blocks.div_ceil(nested);
    Spec {
        header: TensorHeader::new(name, shape, scheme)
            .with_block_size(bs)
            .with_double_quant(nested),
        sections: vec![
            (SectionRole::Codes, SectionDtype::U4, n, codes),
            (
                SectionRole::AbsmaxCodes,
                SectionDtype::U8,
                blocks,
                pseudo(blocks as usize, seed + 1),
            ),
            (
                SectionRole::NestedAbsmax,
                SectionDtype::F32,
                nested_n,
                f32_bytes(&vec![0.25; nested_n as usize]),
            ),
        ],
        late_offset: None,
    }
}

fn plain(name: &str, shape: Vec<u64>, scheme: Scheme, seed: u64) -> Spec {
    let n: u64 = shape.iter().product();
    let dtype = match scheme {
        Scheme::F16 => SectionDtype::F16,
        Scheme::BF16 => SectionDtype::BF16,
        Scheme::F32 => SectionDtype::F32,
        s => SectionDtype::Block(s),
    };
    let bytes = dtype.bytes_for(n).unwrap();
    Spec {
        header: TensorHeader::new(name, shape, scheme),
        sections: vec![(SectionRole::Data, dtype, n, pseudo(bytes as usize, seed))],
        late_offset: None,
    }
}

fn specs() -> Vec<Spec> {
    let mut dq = four_bit_dq("blk.0.ffn_down.weight", Scheme::Nf4, vec![3, 33], 32, 4, 2);
    // Known only at the end of the tensor; a value whose decimal form is long.
    dq.late_offset = Some(f32::from_bits(0x3c49_85f1));
    let mut fp4 = four_bit_dq("blk.0.ffn_up.weight", Scheme::Fp4, vec![2, 640], 64, 256, 3);
    fp4.header.absmax_offset = Some(-0.0);
    let mut zp = nf4("blk.0.attn_k.weight", vec![4, 16], 16, 4);
    zp.sections.push((
        SectionRole::ZeroPoints,
        SectionDtype::F32,
        4,
        f32_bytes(&[0.1, -0.2, 0.0, 1e-30]),
    ));
    vec![
        nf4("blk.0.attn_q.weight", vec![8, 100], 64, 1),
        dq,
        fp4,
        zp,
        plain("blk.0.attn_v.weight", vec![2, 256], Scheme::Q4_K, 5),
        plain("blk.0.attn_output.weight", vec![1, 512], Scheme::Q6_K, 6),
        plain("output.weight", vec![4, 32], Scheme::Q8_0, 7),
        plain("token_embd.weight", vec![3, 5], Scheme::F16, 8),
        plain("blk.0.attn_norm.weight", vec![7], Scheme::BF16, 9),
        plain("rope.scale", vec![], Scheme::F32, 10),
        plain("empty", vec![0, 4], Scheme::F32, 11),
        nf4("empty.nf4", vec![0], 64, 12),
    ]
}

/// Writes `specs` with section data in chunks of `chunk` bytes (0: one write per section).
fn write_to<W: std::io::Write + std::io::Seek>(out: W, specs: &[Spec], chunk: usize) -> W {
    let mut w = QnatWriter::new(out, model()).unwrap();
    for s in specs {
        w.begin_tensor(s.header.clone()).unwrap();
        for (role, dtype, count, data) in &s.sections {
            w.begin_section(*role, *dtype, *count, data.len() as u64)
                .unwrap();
            if chunk == 0 {
                w.write(data).unwrap();
            } else {
                // Uneven chunks: 1, chunk, 1, chunk, ...
                let mut rest = &data[..];
                let mut small = true;
                while !rest.is_empty() {
                    let n = if small { 1 } else { chunk }.min(rest.len());
                    w.write(&rest[..n]).unwrap();
                    rest = &rest[n..];
                    small = !small;
                }
            }
        }
        if let Some(off) = s.late_offset {
            w.set_absmax_offset(off).unwrap();
        }
        w.end_tensor().unwrap();
    }
    w.finish().unwrap()
}

fn write_vec(specs: &[Spec], chunk: usize) -> Vec<u8> {
    write_to(IoCursor::new(Vec::new()), specs, chunk).into_inner()
}

fn err_of<T>(r: Result<T, anyhow::Error>) -> anyhow::Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Fails unless `r` is an invalid-input error of `kind` (on one line).
#[track_caller]
fn assert_invalid<T>(r: Result<T, anyhow::Error>, kind: K) {
    let e = err_of(r);
    let line = one_line(&e);
    assert_eq!(exit_code(&e), EXIT_INVALID, "not invalid input: {line}");
    assert_eq!(invalid_kind(&e), Some(kind), "{line}");
    assert!(!line.contains('\n'));
}

/// Replaces the metadata of a valid file and reseals header and checksums.
fn reseal(file: &[u8], edit: impl FnOnce(&mut Json)) -> Vec<u8> {
    let h = Header::decode(file).unwrap();
    let meta = &file[h.metadata_offset as usize..];
    let mut doc: Json = serde_json::from_slice(meta).unwrap();
    edit(&mut doc);
    let json = serde_json::to_vec(&doc).unwrap();
    let count = doc["tensors"].as_array().map_or(0, |a| a.len() as u32);
    let nh = Header::new(
        h.data_size,
        json.len() as u64,
        count,
        Sha256::digest(&json).into(),
    )
    .unwrap();
    let mut out = file[..h.metadata_offset as usize].to_vec();
    out[..128].copy_from_slice(&nh.encode());
    out.extend_from_slice(&json);
    out
}

// ---------------------------------------------------------------- v2 round trip

#[test]
fn round_trip_in_memory() {
    let specs = specs();
    let file = write_vec(&specs, 7);
    let idx = parse_index(&file).unwrap();
    assert_eq!(idx.model, model());
    assert_eq!(idx.header.version, 2);
    assert_eq!(idx.header.data_offset, 128);
    assert_eq!(idx.header.file_size, file.len() as u64);
    assert_eq!(idx.header.tensor_count as usize, specs.len());
    assert_eq!(idx.tensors.len(), specs.len());
    for (t, s) in idx.tensors.iter().zip(&specs) {
        assert_eq!(t.name, s.header.name);
        assert_eq!(t.shape, s.header.shape);
        assert_eq!(t.scheme, s.header.scheme);
        assert_eq!(t.block_size, s.header.block_size);
        assert_eq!(t.double_quant, s.header.double_quant);
        assert_eq!(t.nested_block_size, s.header.nested_block_size);
        let offset = s.late_offset.or(s.header.absmax_offset);
        assert_eq!(t.absmax_offset.map(f32::to_bits), offset.map(f32::to_bits));
        assert_eq!(t.sections.len(), s.sections.len());
        let mut hasher = Sha256::new();
        for (sec, (role, dtype, count, data)) in t.sections.iter().zip(&s.sections) {
            assert_eq!((sec.role, sec.dtype, sec.count), (*role, *dtype, *count));
            assert_eq!(idx.section_data(&file, sec).unwrap(), &data[..]);
            hasher.update(data);
        }
        assert_eq!(t.sha256, <[u8; 32]>::from(hasher.finalize()));
    }
    let checks = idx.verify(&file).unwrap();
    assert!(checks.iter().all(TensorCheck::ok));
    TensorCheck::all_ok(&checks).unwrap();
}

#[test]
fn output_does_not_depend_on_chunking() {
    let specs = specs();
    let a = write_vec(&specs, 0);
    assert_eq!(a, write_vec(&specs, 1));
    assert_eq!(a, write_vec(&specs, 1000));
}

#[test]
fn absmax_offset_bits_round_trip_exactly() {
    for bits in [
        0x3c49_85f1u32,
        0x8000_0000,
        0x0000_0001,
        0x7fc0_0001,
        0xff80_0000,
        0x3f80_0000,
    ] {
        let mut s = four_bit_dq("w", Scheme::Nf4, vec![64], 64, 256, 1);
        s.late_offset = Some(f32::from_bits(bits));
        let file = write_vec(&[s], 0);
        let idx = parse_index(&file).unwrap();
        assert_eq!(idx.tensors[0].absmax_offset.unwrap().to_bits(), bits);
    }
}

#[test]
fn file_round_trip_with_aligned_zero_copy_sections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.qnat");
    let specs = specs();
    let out = BufWriter::new(std::fs::File::create(&path).unwrap());
    let out = write_to(out, &specs, 64);
    drop(out.into_inner().unwrap());
    let (f, src) = open_qnat(&path).unwrap();
    let file = src.files[0].data();
    assert_eq!(file.len() as u64, f.header.file_size);
    assert_eq!(file.as_ptr() as usize % 4096, 0);
    for (t, s) in f.tensors.iter().zip(&specs) {
        for (sec, (_, _, _, data)) in t.sections.iter().zip(&s.sections) {
            assert_eq!(sec.offset % ALIGNMENT, 0);
            let bytes = f.section_data(file, sec).unwrap();
            assert_eq!(bytes.as_ptr() as usize % 64, 0, "{} {}", t.name, sec.role);
            assert_eq!(bytes, &data[..]);
        }
    }
    assert_eq!(
        f.section(file, "output.weight", SectionRole::Data)
            .unwrap()
            .len(),
        136
    );
    assert_invalid(f.section(file, "nope", SectionRole::Data), K::BadArgument);
    assert_invalid(
        f.section(file, "output.weight", SectionRole::Codes),
        K::BadArgument,
    );
    assert!(f.verify(file).unwrap().iter().all(TensorCheck::ok));

    let sum = f.summary();
    assert_eq!((sum.version, sum.alignment), (2, 64));
    assert_eq!(sum.file_size, file.len() as u64);
    assert_eq!(sum.model.name, "tiny-llama");
    let q4k = sum
        .tensors
        .iter()
        .find(|t| t.scheme == Scheme::Q4_K)
        .unwrap();
    assert_eq!(
        (q4k.elements, q4k.bytes, q4k.bits_per_weight),
        (512, 288, 4.5)
    );
    let nf4 = &sum.tensors[0];
    assert_eq!(nf4.bytes, 400 + 13 * 4);
    assert_eq!(nf4.offset, 128);
    let empty = sum.tensors.iter().find(|t| t.name == "empty").unwrap();
    assert_eq!(empty.bits_per_weight, 0.0);
    assert_eq!(
        sum.total_bytes(),
        f.tensors.iter().map(TensorEntry::bytes).sum::<u64>()
    );
    assert!(sum.bits_per_weight() > 0.0);
}

#[test]
fn empty_model_round_trips() {
    let file = write_vec(&[], 0);
    assert_eq!(
        file.len() as u64,
        parse_index(&file).unwrap().header.file_size
    );
    let idx = parse_index(&file).unwrap();
    assert!(idx.tensors.is_empty());
    assert_eq!(idx.header.data_size, 0);
}

// ---------------------------------------------------------------- tampering

#[test]
fn every_header_byte_flip_is_detected() {
    let file = write_vec(&specs(), 0);
    for i in 0..128 {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        let kind = match i {
            0..=3 => K::BadMagic,
            4..=7 => K::UnsupportedVersion,
            _ => K::Checksum,
        };
        assert_invalid(parse_index(&bad), kind);
    }
}

#[test]
fn every_metadata_byte_flip_is_detected() {
    let file = write_vec(&specs(), 0);
    let h = Header::decode(&file).unwrap();
    for i in h.metadata_offset as usize..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x20;
        assert_invalid(parse_index(&bad), K::Checksum);
    }
}

#[test]
fn data_flips_are_found_by_verify_for_the_right_tensor() {
    let file = write_vec(&specs(), 0);
    let idx = parse_index(&file).unwrap();
    for (ti, t) in idx.tensors.iter().enumerate() {
        for s in &t.sections {
            if s.bytes == 0 {
                continue;
            }
            for at in [0, s.bytes - 1] {
                let mut bad = file.clone();
                bad[(128 + s.offset + at) as usize] ^= 0x80;
                // Opening reads no tensor data; verify finds it.
                let idx2 = parse_index(&bad).unwrap();
                let checks = idx2.verify(&bad).unwrap();
                for (ci, c) in checks.iter().enumerate() {
                    assert_eq!(c.ok(), ci != ti, "{} {}", t.name, s.role);
                }
                let line = checks[ti].problem().unwrap();
                assert!(
                    line.contains(&t.name) && line.contains("sha256 mismatch"),
                    "{line}"
                );
                assert_invalid(TensorCheck::all_ok(&checks), K::Checksum);
            }
        }
    }
}

#[test]
fn nonzero_padding_is_reported() {
    let file = write_vec(&specs(), 0);
    let idx = parse_index(&file).unwrap();
    // The first tensor's absmax ends at 448 + 52 = 500; padding runs to 512.
    let s = idx.tensors[0].sections[1];
    let end = 128 + s.offset + s.bytes;
    assert_ne!(end % 64, 0);
    let mut bad = file.clone();
    bad[end as usize] = 1;
    let checks = parse_index(&bad).unwrap().verify(&bad).unwrap();
    assert_eq!(checks[0].nonzero_padding_at, Some(end));
    assert!(checks[0].problem().unwrap().contains("non-zero padding"));
    assert!(checks[1..].iter().all(TensorCheck::ok));
}

// ---------------------------------------------------------------- truncation, sizes

#[test]
fn every_truncation_is_a_clean_error() {
    let file = write_vec(&specs()[..3], 0);
    for n in 0..file.len() {
        let e = err_of(parse_index(&file[..n]));
        assert_eq!(exit_code(&e), EXIT_INVALID, "{n}: {e}");
        let line = one_line(&e);
        if n >= 128 {
            assert_eq!(invalid_kind(&e), Some(K::Truncated), "{n}: {line}");
        }
    }
    let mut longer = file.clone();
    longer.push(0);
    assert_invalid(parse_index(&longer), K::BadLayout);
}

#[test]
fn truncated_files_on_disk_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_vec(&specs()[..2], 0);
    for n in [0, 3, 100, 128, file.len() - 1] {
        let path = dir.path().join(format!("t{n}.qnat"));
        std::fs::write(&path, &file[..n]).unwrap();
        let e = err_of(open_qnat(&path));
        assert_eq!(exit_code(&e), EXIT_INVALID);
        assert!(one_line(&e).starts_with(&path.display().to_string()) || n == 0);
    }
    assert_invalid(open_qnat(&dir.path().join("t0.qnat")), K::Truncated);
    assert_invalid(open_qnat(&dir.path().join("missing.qnat")), K::Unreadable);
    // TensorSource takes a folder for a sharded model; the file opener refuses one.
    assert_invalid(crate::formats::SourceFile::open(dir.path()), K::Unreadable);
}

fn header_with(file: &[u8], f: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut h = Header::decode(file).unwrap();
    f(&mut h);
    let mut out = file.to_vec();
    out[..128].copy_from_slice(&h.encode());
    out
}

#[test]
fn absurd_header_sizes_are_refused() {
    let file = write_vec(&specs()[..2], 0);
    type Edit = Box<dyn Fn(&mut Header)>;
    let cases: Vec<(Edit, K)> = vec![
        (Box::new(|h| h.file_size = u64::MAX), K::Truncated),
        (Box::new(|h| h.metadata_size = u64::MAX - 200), K::BadLayout),
        (Box::new(|h| h.data_size = u64::MAX - 63), K::BadLayout),
        (Box::new(|h| h.data_size += 1), K::BadLayout),
        (Box::new(|h| h.data_offset = 64), K::BadLayout),
        (Box::new(|h| h.metadata_offset += 64), K::BadLayout),
        (Box::new(|h| h.tensor_count = u32::MAX), K::Inconsistent),
        (Box::new(|h| h.alignment = 32), K::BadLayout),
        (Box::new(|h| h.flags = 4), K::UnsupportedVersion),
        (Box::new(|h| h.header_size = 4096), K::BadLayout),
        (Box::new(|h| h.version = 3), K::UnsupportedVersion),
        (Box::new(|h| h.metadata_sha256 = [0; 32]), K::Checksum),
    ];
    for (edit, kind) in cases {
        assert_invalid(parse_index(&header_with(&file, edit)), kind);
    }
}

#[test]
fn hostile_directories_are_refused_without_allocating() {
    let file = write_vec(&specs(), 0);
    type Edit = Box<dyn Fn(&mut Json)>;
    let cases: Vec<(Edit, K)> = vec![
        // Huge shape and counts, consistent with each other: caught by the data bounds.
        (
            Box::new(|d| {
                let t = &mut d["tensors"][0];
                t["shape"] = serde_json::json!([1u64 << 31, 1u64 << 31]);
                t["sections"][0]["count"] = (1u64 << 62).into();
                t["sections"][0]["bytes"] = (1u64 << 61).into();
                t["sections"][1]["count"] = ((1u64 << 62) / 64).into();
                t["sections"][1]["bytes"] = ((1u64 << 62) / 16).into();
            }),
            K::OutOfBounds,
        ),
        (
            Box::new(|d| d["tensors"][0]["shape"] = serde_json::json!([u64::MAX, 2])),
            K::Overflow,
        ),
        (
            Box::new(|d| {
                d["tensors"][0]["shape"] = serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 800])
            }),
            K::BadShape,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][0]["bytes"] = u64::MAX.into()),
            K::BadShape,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][0]["count"] = 801.into()),
            K::BadShape,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["offset"] = 384u64.into()),
            K::BadLayout,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["offset"] = 449u64.into()),
            K::BadLayout,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["offset"] = 512u64.into()),
            K::BadLayout,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["offset"] = (u64::MAX - 63).into()),
            K::OutOfBounds,
        ),
        (
            Box::new(|d| d["tensors"][1]["name"] = "blk.0.attn_q.weight".into()),
            K::Duplicate,
        ),
        (
            Box::new(|d| d["tensors"][0]["scheme"] = "q9_k".into()),
            K::UnknownType,
        ),
        (
            Box::new(|d| d["tensors"][0]["block_size"] = 0.into()),
            K::BadShape,
        ),
        (
            Box::new(|d| d["tensors"][4]["block_size"] = 32.into()),
            K::BadShape,
        ),
        (
            Box::new(|d| d["tensors"][4]["shape"] = serde_json::json!([4, 128])),
            K::BadShape,
        ),
        (
            Box::new(|d| {
                d["tensors"][0]["sections"].as_array_mut().unwrap().pop();
            }),
            K::Inconsistent,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["role"] = "nested_absmax".into()),
            K::BadLayout,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["role"] = "bias".into()),
            K::UnknownType,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["dtype"] = "f64".into()),
            K::UnknownType,
        ),
        (
            Box::new(|d| d["tensors"][0]["sections"][1]["dtype"] = "u8".into()),
            K::Inconsistent,
        ),
        (
            Box::new(|d| {
                let t = d["tensors"][1].as_object_mut().unwrap();
                t.remove("absmax_offset_bits");
                t.remove("absmax_offset");
            }),
            K::Inconsistent,
        ),
        (
            Box::new(|d| d["tensors"][1]["absmax_offset"] = 0.5.into()),
            K::Inconsistent,
        ),
        (
            Box::new(|d| d["tensors"][0]["double_quant"] = true.into()),
            K::Inconsistent,
        ),
        (
            Box::new(|d| d["tensors"][0]["sha256"] = "XYZ".into()),
            K::BadEncoding,
        ),
        (
            Box::new(|d| d["source"][0]["sha256"] = "00".into()),
            K::BadEncoding,
        ),
        (
            Box::new(|d| d["compute_dtype"] = "f8".into()),
            K::BadEncoding,
        ),
        (
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("tensors");
            }),
            K::BadEncoding,
        ),
        (Box::new(|d| *d = Json::Null), K::BadEncoding),
    ];
    for (i, (edit, kind)) in cases.into_iter().enumerate() {
        let r = parse_index(&reseal(&file, edit));
        assert!(r.is_err(), "case {i} ({kind:?}) accepted");
        assert_invalid(r, kind);
    }
    // Header count and directory disagree.
    let mut doc_file = reseal(&file, |_| {});
    let h = Header::decode(&doc_file).unwrap();
    let nh = Header {
        tensor_count: 3,
        ..h
    };
    doc_file[..128].copy_from_slice(&nh.encode());
    assert_invalid(parse_index(&doc_file), K::Inconsistent);
    // Unknown fields are ignored (additive changes within v2).
    let extra = reseal(&file, |d| d["future_field"] = 1.into());
    parse_index(&extra).unwrap();
}

#[test]
fn deeply_nested_json_is_refused() {
    let file = write_vec(&[], 0);
    let h = Header::decode(&file).unwrap();
    // Unknown fields are skipped, but not without a depth limit.
    let json = format!(
        "{{\"future\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    )
    .into_bytes();
    let nh = Header::new(
        h.data_size,
        json.len() as u64,
        0,
        Sha256::digest(&json).into(),
    )
    .unwrap();
    let mut bad = nh.encode().to_vec();
    bad.extend_from_slice(&json);
    assert_invalid(parse_index(&bad), K::BadEncoding);
}

// ---------------------------------------------------------------- writer misuse

fn writer() -> QnatWriter<IoCursor<Vec<u8>>> {
    QnatWriter::new(IoCursor::new(Vec::new()), model()).unwrap()
}

#[test]
fn writer_checks_byte_counts_and_order() {
    let t = || TensorHeader::new("w", vec![64], Scheme::Nf4);
    // Overflowing chunk: a caller bug (exit 1), and the writer is poisoned.
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    w.begin_section(SectionRole::Codes, SectionDtype::U4, 64, 32)
        .unwrap();
    let e = err_of(w.write(&[0; 33]));
    assert_eq!(exit_code(&e), EXIT_RUNTIME);
    assert!(one_line(&e).contains("overflows"));
    assert!(one_line(&err_of(w.write(&[0; 1]))).contains("failed earlier"));

    // Short section.
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    w.begin_section(SectionRole::Codes, SectionDtype::U4, 64, 32)
        .unwrap();
    w.write(&[0; 31]).unwrap();
    assert!(one_line(&err_of(w.begin_section(
        SectionRole::Absmax,
        SectionDtype::F32,
        1,
        4
    )))
    .contains("got 31 of its 32 declared bytes"));

    // Declared bytes disagree with the count.
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    assert_invalid(
        w.begin_section(SectionRole::Codes, SectionDtype::U4, 64, 64),
        K::BadShape,
    );

    // Wrong role order, missing sections, extra sections.
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    assert_invalid(
        w.begin_section(SectionRole::Absmax, SectionDtype::F32, 1, 4),
        K::BadLayout,
    );
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    w.write_section(SectionRole::Codes, SectionDtype::U4, 64, &[0; 32])
        .unwrap();
    assert_invalid(w.end_tensor(), K::Inconsistent);
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![4], Scheme::F32))
        .unwrap();
    w.write_section(SectionRole::Data, SectionDtype::F32, 4, &[0; 16])
        .unwrap();
    assert_invalid(
        w.begin_section(SectionRole::ZeroPoints, SectionDtype::F32, 1, 4),
        K::BadLayout,
    );

    // Double quantization needs its offset by end_tensor.
    let mut w = writer();
    w.begin_tensor(t().with_double_quant(256)).unwrap();
    w.write_section(SectionRole::Codes, SectionDtype::U4, 64, &[0; 32])
        .unwrap();
    w.write_section(SectionRole::AbsmaxCodes, SectionDtype::U8, 1, &[0])
        .unwrap();
    w.write_section(SectionRole::NestedAbsmax, SectionDtype::F32, 1, &[0; 4])
        .unwrap();
    assert_invalid(w.end_tensor(), K::Inconsistent);
    let mut w = writer();
    w.begin_tensor(t()).unwrap();
    assert_invalid(w.set_absmax_offset(1.0), K::Inconsistent);

    // Duplicate names; tensors still open; calls out of order.
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32))
        .unwrap();
    w.write_section(SectionRole::Data, SectionDtype::F32, 1, &[0; 4])
        .unwrap();
    w.end_tensor().unwrap();
    assert_invalid(
        w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32)),
        K::Duplicate,
    );
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32))
        .unwrap();
    assert!(one_line(&err_of(w.finish())).contains("still open"));
    let mut w = writer();
    assert!(w.write(&[1]).is_err());
    let mut w = writer();
    assert!(w.end_tensor().is_err());
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32))
        .unwrap();
    assert!(w.write(&[1]).is_err());

    // Invalid headers.
    let mut w = writer();
    assert_invalid(
        w.begin_tensor(TensorHeader::new("q", vec![100], Scheme::Q4_K)),
        K::BadShape,
    );
    let mut w = writer();
    assert_invalid(
        w.begin_tensor(TensorHeader::new("", vec![1], Scheme::F32)),
        K::BadArgument,
    );
    let mut m = model();
    m.source[0].sha256 = "abc".into();
    assert_invalid(
        QnatWriter::new(IoCursor::new(Vec::new()), m),
        K::BadEncoding,
    );
}

#[test]
fn absurd_declared_sizes_allocate_nothing() {
    let mut w = writer();
    let shape = vec![1u64 << 31, 1u64 << 31];
    w.begin_tensor(TensorHeader::new("huge", shape, Scheme::Nf4))
        .unwrap();
    w.begin_section(SectionRole::Codes, SectionDtype::U4, 1 << 62, 1 << 61)
        .unwrap();
    w.write(&[0; 10]).unwrap();
    assert!(one_line(&err_of(w.end_tensor())).contains("got 10 of its 2305843009213693952"));
}

#[test]
fn interrupted_writes_leave_no_valid_header() {
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32))
        .unwrap();
    let _ = w.write(&[0; 100]);
    // The caller drops the writer (AtomicFile then removes the temp file); what was
    // written so far does not start with the magic.
    drop(w);
    let mut w = writer();
    w.begin_tensor(TensorHeader::new("x", vec![1], Scheme::F32))
        .unwrap();
    w.write_section(SectionRole::Data, SectionDtype::F32, 1, &[0; 4])
        .unwrap();
    w.end_tensor().unwrap();
    let partial = w.out_for_test();
    assert!(!partial.starts_with(MAGIC));
    assert_invalid(parse_index(&partial), K::BadMagic);
}

impl QnatWriter<IoCursor<Vec<u8>>> {
    fn out_for_test(&self) -> Vec<u8> {
        self.peek_out().get_ref().clone()
    }
}

// ---------------------------------------------------------------- v1

/// NF4 levels (qlora-rs `NF4_LEVELS`, equal to bitsandbytes' table).
const NF4: [f32; 16] = [
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

/// qlora-rs `QuantizedTensor`, the fields `native.rs` reads.
struct Qt {
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Option<Vec<f32>>,
    scales_quantized: Option<Vec<u8>>,
    scales_scales: Option<Vec<f32>>,
    shape: Vec<usize>,
    block_size: usize,
}

/// qlora-rs `quantize_per_tensor` / `quantize_per_channel` (the block is the channel):
/// absmax scale (1.0 for an all-zero block), nearest NF4 level, each block packed on its
/// own with the first element in the low nibble; zero points `-min / scale`; double
/// quantization `(s / (absmax / 127) + 128) as u8` with one factor.
fn qlora_quantize(x: &[f32], shape: &[usize], block: usize, zp: bool, dq: bool) -> Qt {
    let nearest = |v: f32| {
        let mut best = (0usize, f32::MAX);
        for (i, &l) in NF4.iter().enumerate() {
            if (v - l).abs() < best.1 {
                best = (i, (v - l).abs());
            }
        }
        best.0 as u8
    };
    let mut data = Vec::new();
    let mut scales = Vec::new();
    let mut zps = Vec::new();
    for b in x.chunks(block) {
        let absmax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if absmax > 0.0 { absmax } else { 1.0 };
        scales.push(scale);
        for pair in b.chunks(2) {
            let q0 = nearest(pair[0] / scale);
            let q1 = pair.get(1).map_or(0, |&v| nearest(v / scale));
            data.push((q1 << 4) | q0);
        }
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        zps.push(-min / scale);
    }
    let (sq, ss) = if dq {
        let absmax = scales.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let factor = absmax / 127.0;
        let q = scales
            .iter()
            .map(|&s| (s / factor + 128.0).clamp(0.0, 255.0) as u8)
            .collect();
        (Some(q), Some(vec![factor]))
    } else {
        (None, None)
    };
    Qt {
        data,
        scales,
        zero_points: zp.then_some(zps),
        scales_quantized: sq,
        scales_scales: ss,
        shape: shape.to_vec(),
        block_size: block,
    }
}

/// `native::export_native` byte for byte. `dq_bytes`: newer qlora-rs, which also writes
/// (and counts in its offsets) the double-quantized scales; older versions do neither.
fn qlora_export_native(
    tensors: &[(&str, &Qt)],
    name: &str,
    model_type: &str,
    dtype: u8,
    dq_bytes: bool,
) -> Vec<u8> {
    let mut f = Vec::new();
    let string = |f: &mut Vec<u8>, s: &str| {
        f.extend((s.len() as u32).to_le_bytes());
        f.extend(s.as_bytes());
    };
    // write_header
    f.extend(b"QNAT");
    f.extend(1u32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend(0u64.to_le_bytes());
    f.extend((tensors.len() as u32).to_le_bytes());
    f.extend(0u32.to_le_bytes());
    // write_metadata
    string(&mut f, name);
    string(&mut f, model_type);
    f.push(dtype);
    // write_tensor_headers: calculate_header_size, calculate_tensor_size
    let mut current = 32 + (4 + 11 + 4 + 8 + 1);
    for (n, t) in tensors {
        current += 4 + n.len() + 4 + t.shape.len() * 8 + 4 + 8 + 4;
    }
    let mut offsets = Vec::new();
    for (_, t) in tensors {
        offsets.push(current as u64);
        let mut size = t.data.len() + t.scales.len() * 4;
        size += t.zero_points.as_ref().map_or(0, |z| z.len() * 4);
        if dq_bytes {
            size += t.scales_quantized.as_ref().map_or(0, Vec::len);
            size += t.scales_scales.as_ref().map_or(0, |s| s.len() * 4);
        }
        current += size;
    }
    for ((n, t), off) in tensors.iter().zip(&offsets) {
        string(&mut f, n);
        f.extend((t.shape.len() as u32).to_le_bytes());
        for &d in &t.shape {
            f.extend((d as u64).to_le_bytes());
        }
        f.extend((t.block_size as u32).to_le_bytes());
        f.extend(off.to_le_bytes());
        f.extend((t.scales.len() as u32).to_le_bytes());
    }
    // write_tensor_data
    for (_, t) in tensors {
        f.extend(&t.data);
        f.extend(f32_bytes(&t.scales));
        if let Some(z) = &t.zero_points {
            f.extend(f32_bytes(z));
        }
        if dq_bytes {
            if let Some(q) = &t.scales_quantized {
                f.extend(q);
            }
            if let Some(s) = &t.scales_scales {
                f.extend(f32_bytes(s));
            }
        }
    }
    f
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    pseudo(n, seed)
        .iter()
        .map(|&b| (b as f32 - 127.5) / 50.0)
        .collect()
}

fn read_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Dequantizes a v1 tensor as qlora-rs does (f32 scales, zero points added to the level).
fn dequant_v1(data: &[u8], t: &v1::V1Tensor) -> Vec<f32> {
    let codes = &data[t.codes.clone()];
    let scales = read_f32s(&data[t.scales.clone().unwrap()]);
    let zps = t.zero_points.clone().map(|r| read_f32s(&data[r]));
    let bs = t.block_size as usize;
    let per = bs.div_ceil(2);
    let mut out = Vec::new();
    for (b, &scale) in scales.iter().enumerate() {
        let zp = zps.as_ref().map_or(0.0, |z| z[b]);
        for k in 0..bs {
            let byte = codes[b * per + k / 2];
            let code = if k % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            out.push((NF4[code as usize] + zp) * scale);
        }
    }
    out
}

/// Dequantizes a v2 NF4 tensor without double quantization (high nibble first).
fn dequant_v2(idx: &QnatIndex, data: &[u8], t: &TensorEntry) -> Vec<f32> {
    let get = |r| idx.section_data(data, t.section(r).unwrap()).unwrap();
    let codes = get(SectionRole::Codes);
    let absmax = read_f32s(get(SectionRole::Absmax));
    let zps = t
        .section(SectionRole::ZeroPoints)
        .map(|s| read_f32s(idx.section_data(data, s).unwrap()));
    (0..t.elements() as usize)
        .map(|i| {
            let byte = codes[i / 2];
            let code = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            let b = i / t.block_size as usize;
            (NF4[code as usize] + zps.as_ref().map_or(0.0, |z| z[b])) * absmax[b]
        })
        .collect()
}

fn v1_fixture(dq_bytes: bool) -> (Vec<u8>, Vec<(String, Qt)>) {
    let tensors = vec![
        (
            "layers.0.q_proj.weight".to_owned(),
            qlora_quantize(&values(64 * 64, 1), &[64, 64], 64, false, false),
        ),
        // Double quantization (bytes written only by newer qlora-rs).
        (
            "layers.0.k_proj.weight".to_owned(),
            qlora_quantize(&values(32 * 32, 2), &[32, 32], 64, false, true),
        ),
        // Zero points.
        (
            "layers.0.v_proj.weight".to_owned(),
            qlora_quantize(&values(16 * 8, 3), &[16, 8], 32, true, false),
        ),
        // Per-channel with an odd channel size, zero points and double quantization.
        (
            "layers.0.o_proj.weight".to_owned(),
            qlora_quantize(&values(3 * 5, 4), &[3, 5], 5, true, true),
        ),
    ];
    let refs: Vec<(&str, &Qt)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = qlora_export_native(&refs, "qlora-model", "qlora", 2, dq_bytes);
    (bytes, tensors)
}

#[test]
fn v1_header_is_28_bytes_and_offsets_are_skewed() {
    let (bytes, tensors) = v1_fixture(true);
    // Tensor count at 20..24 and the model name length right after byte 28.
    assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 4);
    assert_eq!(u32::from_le_bytes(bytes[28..32].try_into().unwrap()), 11);
    let f = read_v1(&bytes).unwrap();
    assert_eq!(f.declared_metadata_size, 0);
    assert_eq!(
        (f.model_name.as_str(), f.model_type.as_str()),
        ("qlora-model", "qlora")
    );
    assert_eq!(f.compute_dtype, ComputeDtype::Bf16);
    // Real metadata: 4 + 11 + 4 + 5 + 1 = 25 bytes after a 28-byte header; qlora-rs
    // assumes 32 + 28 = 60: every stored offset is 7 bytes too far.
    assert_eq!(f.offset_skew(), Some(7));
    assert_eq!(f.resolution, V1Resolution::OffsetDeltas);
    let extras: Vec<V1Extras> = f.tensors.iter().map(|t| t.extras).collect();
    let e = |zero_points, double_quant| V1Extras {
        zero_points,
        double_quant,
    };
    assert_eq!(
        extras,
        [
            e(false, false),
            e(false, true),
            e(true, false),
            e(true, true)
        ]
    );
    for (t, (name, q)) in f.tensors.iter().zip(&tensors) {
        assert_eq!(&t.name, name);
        assert_eq!(
            t.shape,
            q.shape.iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
        assert_eq!(t.block_size as usize, q.block_size);
        assert_eq!(&bytes[t.codes.clone()], &q.data[..]);
        assert_eq!(read_f32s(&bytes[t.scales.clone().unwrap()]), q.scales);
        if let Some(r) = &t.dq_codes {
            assert_eq!(&bytes[r.clone()], &q.scales_quantized.as_ref().unwrap()[..]);
        }
    }
}

#[test]
fn old_qlora_files_without_double_quant_bytes_are_read() {
    let (bytes, _) = v1_fixture(false);
    let f = read_v1(&bytes).unwrap();
    assert_eq!(f.resolution, V1Resolution::OffsetDeltas);
    assert!(f.tensors.iter().all(|t| !t.extras.double_quant));
    assert!(f.tensors[2].extras.zero_points && f.tensors[3].extras.zero_points);
}

#[test]
fn garbage_v1_offsets_fall_back_to_one_layout() {
    let q = qlora_quantize(&values(128, 9), &[2, 64], 64, true, false);
    let r = qlora_quantize(&values(256, 8), &[256], 64, true, false);
    let mut bytes = qlora_export_native(&[("a", &q), ("b", &r)], "m", "llama", 0, true);
    // Overwrite both stored offsets (after name, dims, block size) with nonsense.
    let a_off = 28 + 4 + 1 + 4 + 5 + 1 + 4 + 1 + 4 + 16 + 4;
    bytes[a_off..a_off + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let f = read_v1(&bytes).unwrap();
    assert_eq!(f.resolution, V1Resolution::Uniform);
    assert!(f
        .tensors
        .iter()
        .all(|t| t.extras.zero_points && !t.extras.double_quant));
    assert_eq!(f.compute_dtype, ComputeDtype::F32);
}

#[test]
fn v1_migrates_to_v2_with_identical_values() {
    for dq_bytes in [true, false] {
        let (bytes, _) = v1_fixture(dq_bytes);
        let v1f = read_v1(&bytes).unwrap();
        let source = vec![SourceDigest {
            name: "old.qnat".into(),
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
        }];
        let out = v1::migrate_v1_file(
            &bytes,
            IoCursor::new(Vec::new()),
            "qforge 0.1.0",
            source.clone(),
            ScalesChoice::Exact,
        )
        .unwrap()
        .into_inner();
        // The default (stored scales) migrates to what the decoder gives with them.
        let stored = v1::migrate_v1_file(
            &bytes,
            IoCursor::new(Vec::new()),
            "qforge 0.1.0",
            source,
            ScalesChoice::Stored,
        )
        .unwrap()
        .into_inner();
        let sidx = parse_index(&stored).unwrap();
        for (t1, t2) in v1f.tensors.iter().zip(&sidx.tensors) {
            let mut want = vec![0f32; t1.elements() as usize];
            t1.decode(&bytes, ScalesChoice::Stored, &mut want).unwrap();
            let got = dequant_v2(&sidx, &stored, t2);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&want), bits(&got), "{}", t1.name);
            let mut exact = vec![0f32; t1.elements() as usize];
            t1.decode(&bytes, ScalesChoice::Exact, &mut exact).unwrap();
            assert_eq!(bits(&exact), bits(&dequant_v1(&bytes, t1)), "{}", t1.name);
        }
        let idx = parse_index(&out).unwrap();
        assert!(idx.verify(&out).unwrap().iter().all(TensorCheck::ok));
        assert_eq!(idx.model.name, "qlora-model");
        assert_eq!(idx.model.architecture, "qlora");
        assert_eq!(idx.model.compute_dtype, ComputeDtype::Bf16);
        assert_eq!(idx.model.source[0].name, "old.qnat");
        assert_eq!(idx.tensors.len(), 4);
        for (t1, t2) in v1f.tensors.iter().zip(&idx.tensors) {
            assert_eq!(t2.name, t1.name);
            assert_eq!(t2.scheme, Scheme::Nf4);
            assert!(!t2.double_quant);
            assert_eq!(t2.block_size, u64::from(t1.block_size));
            assert_eq!(
                t2.section(SectionRole::ZeroPoints).is_some(),
                t1.extras.zero_points
            );
            let a: Vec<u32> = dequant_v1(&bytes, t1).iter().map(|x| x.to_bits()).collect();
            let b: Vec<u32> = dequant_v2(&idx, &out, t2)
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(a, b, "{}", t1.name);
        }
    }
}

#[test]
fn repacking_odd_blocks() {
    // Blocks of 3: v1 bytes per block [c1 c0] [pad c2]; v2 packs c0 c1 | c2 c3 | ...
    let codes: Vec<u8> = (0..9).collect();
    let mut v1 = Vec::new();
    for b in codes.chunks(3) {
        v1.push((b[1] << 4) | b[0]);
        v1.push(b[2]);
    }
    let mut out = Vec::new();
    repack_v1_codes(&v1, 3, 9, |c| {
        out.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(out, [0x01, 0x23, 0x45, 0x67, 0x80]);
    assert_invalid(repack_v1_codes(&v1[..5], 3, 9, |_| Ok(())), K::BadShape);
    // Large even blocks go through in several chunks.
    let big = pseudo(200_000, 5);
    let mut n = 0;
    let mut chunks = 0;
    repack_v1_codes(&big, 64, 400_000, |c| {
        assert!(c.iter().zip(&big[n..]).all(|(a, b)| *a == b.rotate_left(4)));
        n += c.len();
        chunks += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!((n, chunks), (200_000, 4));
}

#[test]
fn v1_truncation_and_hostile_counts_are_clean_errors() {
    let (bytes, _) = v1_fixture(true);
    // v1 records no sizes: cutting exactly the last tensor's optional trailing blocks
    // leaves a well-formed file (its 3 x u8 + f32 double-quant scales, 7 bytes; or those
    // and its 3 x f32 zero points, 19 bytes). Every other cut is an error.
    let len = bytes.len();
    let mut accepted = 0;
    for n in 0..len {
        match read_v1(&bytes[..n]) {
            Ok(f) => {
                accepted += 1;
                assert!(n == len - 7 || n == len - 19, "{n} of {len} accepted");
                let last = &f.tensors[3].extras;
                assert!(!last.double_quant && last.zero_points == (n == len - 7));
            }
            Err(e) => assert_eq!(exit_code(&e), EXIT_INVALID, "{n}: {e}"),
        }
    }
    assert_eq!(accepted, 2);
    let mut longer = bytes.clone();
    longer.push(0);
    // One more byte: no layout fits (or a wrong one would leave it over).
    assert_eq!(exit_code(&err_of(read_v1(&longer))), EXIT_INVALID);

    let mut bad = bytes.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_invalid(read_v1(&bad), K::Implausible);
    let mut bad = bytes.clone();
    bad[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_invalid(read_v1(&bad), K::Truncated);
    let mut bad = bytes.clone();
    bad[52] = 9;
    assert_invalid(read_v1(&bad), K::UnknownType);
    // The first tensor's n_dims (after its 22-byte name).
    let dims_at = 53 + 4 + 22;
    let mut bad = bytes.clone();
    bad[dims_at..dims_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_invalid(read_v1(&bad), K::Implausible);
    // Block count that does not cover the shape.
    let blocks_at = dims_at + 4 + 16 + 4 + 8;
    let mut bad = bytes.clone();
    bad[blocks_at..blocks_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_invalid(read_v1(&bad), K::BadShape);
    let mut bad = bytes.clone();
    bad[blocks_at - 12..blocks_at - 8].copy_from_slice(&0u32.to_le_bytes());
    assert_invalid(read_v1(&bad), K::BadShape);
}

#[test]
fn versions_point_to_the_right_reader() {
    let (bytes, _) = v1_fixture(true);
    assert_invalid(parse_index(&bytes), K::UnsupportedVersion);
    let v2 = write_vec(&specs()[..1], 0);
    assert_invalid(read_v1(&v2), K::UnsupportedVersion);
    assert_invalid(read_v1(b"GGUF\x03\0\0\0"), K::BadMagic);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.qnat");
    std::fs::write(&path, &bytes).unwrap();
    let e = err_of(open_qnat(&path));
    assert!(one_line(&e).starts_with(&path.display().to_string()));
    assert!(one_line(&e).contains("migrate it to QNAT v2"));
    // qlora-rs's own version 2 is told apart by its header, not taken for a corrupt file.
    let mut v2q = bytes.clone();
    v2q[4..8].copy_from_slice(&2u32.to_le_bytes());
    let e = err_of(parse_index(&v2q));
    assert!(
        one_line(&e).contains("qlora-rs's QNAT \"version 2\""),
        "{}",
        one_line(&e)
    );
    assert_eq!(v1::detect(&v2q), Some(v1::QloraLayout::V2));
    assert_eq!(v1::detect(&v2), None);
}

#[test]
fn v1_skew_follows_the_name_lengths_and_empty_files_migrate() {
    let q = qlora_quantize(&values(64, 3), &[64], 64, false, false);
    let name = "a-much-longer-model-name";
    let bytes = qlora_export_native(&[("w", &q)], name, "llama", 1, true);
    let f = read_v1(&bytes).unwrap();
    assert_eq!(f.offset_skew(), Some(23 - name.len() as i128 - 5));
    assert_eq!(f.compute_dtype, ComputeDtype::F16);

    let empty = qlora_export_native(&[], "qlora-model", "qlora", 0, true);
    assert_eq!(empty.len(), 28 + 4 + 11 + 4 + 5 + 1);
    let f = read_v1(&empty).unwrap();
    assert!(f.tensors.is_empty() && f.offset_skew().is_none());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.qnat");
    let out = std::fs::File::create(&path).unwrap();
    let out = v1::migrate_v1_file(
        &bytes,
        BufWriter::new(out),
        "qforge",
        vec![],
        ScalesChoice::Stored,
    )
    .unwrap();
    drop(out);
    let (v2, src) = open_qnat(&path).unwrap();
    let file = src.files[0].data();
    assert_eq!(v2.tensors.len(), 1);
    assert_eq!(v2.model.kv["qnat.migrated_from"], "qnat-v1 (qlora-rs)");
    assert_eq!(
        v2.section(file, "w", SectionRole::Absmax).unwrap(),
        &f32_bytes(&q.scales)[..]
    );
    TensorCheck::all_ok(&v2.verify(file).unwrap()).unwrap();
}

/// Mutates `file` at pseudo-random places; parsing (and verifying what parses) must
/// never panic, and every error must be invalid input.
#[test]
fn random_mutations_never_panic() {
    let v2 = write_vec(&specs(), 0);
    let h = Header::decode(&v2).unwrap();
    let (v1_bytes, _) = v1_fixture(true);
    let noise = pseudo(200_000, 77);
    let mut k = 0;
    let mut next = || {
        k += 4;
        u32::from_le_bytes([noise[k - 4], noise[k - 3], noise[k - 2], noise[k - 1]]) as usize
    };
    for round in 0..2000 {
        // v2 with resealed checksums, so the mutation reaches the directory checks.
        let mut meta = v2[h.metadata_offset as usize..].to_vec();
        for _ in 0..1 + round % 3 {
            let at = next() % meta.len();
            meta[at] = b"0123456789[]{}\",:-e."[next() % 20];
        }
        let nh = Header::new(
            h.data_size,
            meta.len() as u64,
            h.tensor_count,
            Sha256::digest(&meta).into(),
        )
        .unwrap();
        let mut file = v2[..h.metadata_offset as usize].to_vec();
        file[..128].copy_from_slice(&nh.encode());
        file.extend_from_slice(&meta);
        match parse_index(&file) {
            Ok(idx) => {
                idx.verify(&file).unwrap();
                idx.summary();
            }
            Err(e) => assert_eq!(exit_code(&e), EXIT_INVALID, "{e}"),
        }
        // v1 with raw byte flips.
        let mut bad = v1_bytes.clone();
        for _ in 0..1 + round % 3 {
            let at = next() % bad.len();
            bad[at] ^= 1 << (next() % 8);
        }
        let cut = if round % 5 == 0 {
            next() % bad.len()
        } else {
            bad.len()
        };
        if let Err(e) = read_v1(&bad[..cut]) {
            assert_eq!(exit_code(&e), EXIT_INVALID, "{e}");
        }
    }
}

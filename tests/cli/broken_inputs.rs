//! Broken and hostile files: one clear line, exit 2, no panic, and never an allocation
//! larger than the file (checked with a counting global allocator in this test binary).

use crate::common::*;
use qforge::error::InvalidKind as K;
use qforge::formats::TensorSource;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Records the largest single allocation made by a thread while it watches (the test
/// binary runs other tests in parallel; only the watching thread's allocations count).
struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
// Allocation tracking is global: serialize the tests that read it.
static SERIAL: Mutex<()> = Mutex::new(());
thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if WATCHING.try_with(|w| w.get()).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        record(n);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opens in-process, expecting an invalid-input error of `kind`, and checks no allocation
/// exceeded the file size (plus a small constant for path buffers etc).
fn expect_invalid_in_process(bytes: &[u8], kind: K) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "f.bin", bytes);
    LARGEST.store(0, Ordering::Relaxed);
    WATCHING.with(|w| w.set(true));
    let opened = TensorSource::open(&p);
    WATCHING.with(|w| w.set(false));
    let err = match opened {
        Ok(_) => panic!("expected a {kind:?} error"),
        Err(e) => e,
    };
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= bytes.len() + 4096,
        "allocated {largest} bytes for a {} byte file",
        bytes.len()
    );
    assert_eq!(qforge::error::exit_code(&err), 2, "{err:#}");
    let line = qforge::error::one_line(&err);
    assert_eq!(qforge::error::invalid_kind(&err), Some(kind), "{line}");
    assert!(!line.contains('\n'));
}

#[test]
fn gguf_bad_magic_version_and_endianness() {
    let mut g = GgufBytes::header(3, 0, 0);
    g.0[0] = b'X';
    expect_invalid_in_process(&g.0, K::BadMagic);
    expect_invalid_in_process(&GgufBytes::header(1, 0, 0).0, K::UnsupportedVersion);
    expect_invalid_in_process(&GgufBytes::header(9, 0, 0).0, K::UnsupportedVersion);
    expect_invalid_in_process(
        &GgufBytes::header(3u32.swap_bytes(), 0, 0).0,
        K::UnsupportedVersion,
    );
}

#[test]
fn gguf_absurd_counts_do_not_allocate() {
    expect_invalid_in_process(&GgufBytes::header(3, 1 << 60, 0).0, K::Implausible);
    expect_invalid_in_process(&GgufBytes::header(3, 0, u64::MAX).0, K::Implausible);
    // A string length of 2^62 must not be allocated.
    let mut g = GgufBytes::header(3, 0, 1);
    g.u64(1 << 62).data(64);
    expect_invalid_in_process(&g.0, K::Truncated);
    // An array of 2^58 u64s.
    let mut g = GgufBytes::header(3, 0, 1);
    g.str(b"k").u32(9).u32(10).u64(1 << 58);
    expect_invalid_in_process(&g.0, K::Implausible);
}

#[test]
fn gguf_offsets_past_eof_and_overflowing_shapes() {
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[32, 4], 0, 0).data(100);
    expect_invalid_in_process(&g.0, K::OutOfBounds);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[8], 0, u64::MAX - 31).data(32);
    expect_invalid_in_process(&g.0, K::OutOfBounds);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[1 << 32, 1 << 32, 1 << 32], 0, 0).data(32);
    expect_invalid_in_process(&g.0, K::Overflow);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[100], 12, 0).data(4096);
    expect_invalid_in_process(&g.0, K::BadShape);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[8], 4, 0).data(32);
    expect_invalid_in_process(&g.0, K::UnknownType);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[8], 0, 7).data(64);
    expect_invalid_in_process(&g.0, K::BadLayout);
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w", &[1, 1, 1, 1, 1], 0, 0).data(64);
    expect_invalid_in_process(&g.0, K::BadShape);
}

#[test]
fn gguf_non_utf8_names_and_duplicates() {
    let mut g = GgufBytes::header(3, 1, 0);
    g.tensor(b"w\xff\xfe", &[8], 0, 0).data(32);
    expect_invalid_in_process(&g.0, K::BadEncoding);
    let mut g = GgufBytes::header(3, 0, 1);
    g.str(b"\xc3\x28").u32(4).u32(1);
    expect_invalid_in_process(&g.0, K::BadEncoding);
    let mut g = GgufBytes::header(3, 0, 2);
    g.str(b"k").u32(4).u32(1).str(b"k").u32(4).u32(2);
    expect_invalid_in_process(&g.0, K::Duplicate);
    let mut g = GgufBytes::header(3, 2, 0);
    g.tensor(b"w", &[8], 0, 0)
        .tensor(b"w", &[8], 0, 32)
        .data(64);
    expect_invalid_in_process(&g.0, K::Duplicate);
    let mut g = GgufBytes::header(3, 0, 1);
    g.str(b"general.alignment").u32(4).u32(3);
    expect_invalid_in_process(&g.0, K::BadLayout);
}

#[test]
fn every_truncation_of_the_gguf_fixture_is_a_clean_error() {
    let bytes = std::fs::read(fixture("mixed-types.gguf")).unwrap();
    for len in 0..bytes.len() {
        let r = qforge::formats::gguf::read_header(&bytes[..len]);
        let err = r.expect_err("truncated header must fail");
        assert_eq!(qforge::error::exit_code(&err), 2, "len {len}: {err}");
    }
    assert!(qforge::formats::gguf::read_header(&bytes).is_ok());
}

#[test]
fn every_truncation_of_the_safetensors_fixture_is_a_clean_error() {
    let bytes = std::fs::read(fixture("sharded/model-00002-of-00002.safetensors")).unwrap();
    for len in 0..bytes.len() {
        let err = qforge::formats::safetensors::read_shard(&bytes[..len], 0)
            .err()
            .unwrap_or_else(|| panic!("len {len} must fail"));
        assert_eq!(qforge::error::exit_code(&err), 2);
    }
}

#[test]
fn safetensors_broken_headers() {
    let mk = |h: &[u8], data: usize| {
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h);
        v.resize(v.len() + data, 0);
        v
    };
    expect_invalid_in_process(
        &mk(
            br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        ),
        K::BadLayout,
    );
    expect_invalid_in_process(
        &mk(
            br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            20,
        ),
        K::BadLayout,
    );
    expect_invalid_in_process(
        &mk(
            br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            24,
        ),
        K::BadLayout,
    );
    expect_invalid_in_process(
        &mk(
            br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
        ),
        K::BadShape,
    );
    expect_invalid_in_process(
        &mk(
            br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
            16,
        ),
        K::Overflow,
    );
    expect_invalid_in_process(&mk(b"{\"\xff\":1}", 0), K::BadEncoding);
    let mut huge = (1u64 << 62).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    expect_invalid_in_process(&huge, K::Implausible);
}

#[test]
fn binary_reports_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(&dir, "bad.gguf", &GgufBytes::header(3, 1 << 60, 0).0);
    assert_invalid(&qforge_on(&["inspect"], &p), "implausible tensor count");
    let p = write_tmp(&dir, "empty.gguf", b"");
    assert_invalid(&qforge_on(&["inspect", "--json"], &p), "is empty");
    assert_invalid(&qforge(&["inspect", "/nonexistent/x.gguf"]), "cannot open");
    let out = qforge_on(&["inspect", "--json"], &p);
    assert!(out.stdout.is_empty(), "no partial JSON on stdout");
}

#[test]
fn sharded_index_hostile_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("sharded/model-00001-of-00002.safetensors");
    std::fs::copy(&src, dir.path().join("m.safetensors")).unwrap();
    let index =
        |file: &str| format!(r#"{{"weight_map":{{"a.weight":"{file}","a.bias":"{file}"}}}}"#);
    for bad in ["../m.safetensors", "/etc/passwd", "sub/../../m.safetensors"] {
        let p = write_tmp(&dir, "model.safetensors.index.json", index(bad).as_bytes());
        assert_invalid(&qforge_on(&["inspect"], &p), "inside the model folder");
    }
    // A symlink that leaves the folder.
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(&src, outside.path().join("evil.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("evil.safetensors"),
        dir.path().join("link.safetensors"),
    )
    .unwrap();
    let p = write_tmp(
        &dir,
        "model.safetensors.index.json",
        index("link.safetensors").as_bytes(),
    );
    assert_invalid(&qforge_on(&["inspect"], &p), "outside the model folder");
    // Index and shard disagree.
    let p = write_tmp(
        &dir,
        "model.safetensors.index.json",
        br#"{"weight_map":{"a.weight":"m.safetensors"}}"#,
    );
    assert_invalid(&qforge_on(&["inspect"], &p), "missing from the index");
    let p = write_tmp(&dir, "model.safetensors.index.json", br#"{"weight_map":{"a.weight":"m.safetensors","a.bias":"m.safetensors","zzz":"m.safetensors"}}"#);
    assert_invalid(&qforge_on(&["inspect"], &p), "\"zzz\" is in the index");
    let p = write_tmp(
        &dir,
        "model.safetensors.index.json",
        br#"{"weight_map":{"a.weight":"gone.safetensors"}}"#,
    );
    assert_invalid(&qforge_on(&["inspect"], &p), "gone.safetensors");
}

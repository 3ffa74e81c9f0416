//! QNAT v2 reader (`qforge::formats::qnat::parse_index`): any bytes give `Ok` or `Err`,
//! never a panic, a hang or a large allocation.
//!
//! Mutated files almost never keep their two SHA-256 checksums (header and metadata),
//! so each input is parsed as is and again resealed (both checksums recomputed, as a
//! hostile writer would) to reach the metadata and tensor-directory checks. On `Ok`,
//! the summary builds and checksum verification returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(sealed) = reseal(data) {
        check(&sealed);
    }
});

fn check(data: &[u8]) {
    let Ok(index) = qforge::formats::qnat::parse_index(data) else {
        return;
    };
    let _ = index.summary();
    let _ = index.verify(data);
}

/// Recomputes the metadata and header checksums (header bytes 64..96 and 96..128).
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 128 || &data[..4] != b"QNAT" {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    let (meta_off, meta_len) = (u64_at(32), u64_at(40));
    let meta_end = meta_off.checked_add(meta_len)?;
    let meta = data.get(usize::try_from(meta_off).ok()?..usize::try_from(meta_end).ok()?)?;
    let mut out = data.to_vec();
    out[64..96].copy_from_slice(&Sha256::digest(meta));
    let head: [u8; 32] = Sha256::digest(&out[..96]).into();
    out[96..128].copy_from_slice(&head);
    Some(out)
}

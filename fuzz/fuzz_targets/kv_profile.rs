//! KV profile parser (`qforge::kv::KvProfile::from_json`): any text gives `Ok` or `Err`,
//! never a panic, a hang or a large allocation.
//!
//! Mutated profiles almost never keep their SHA-256 part digests, so on their own they
//! only exercise the JSON and digest layer. To reach the checks behind it, every input
//! that deserializes is also resealed (digests recomputed, as a hostile editor would)
//! and validated again; a profile that validates must then build its codec and answer
//! the region queries `kv-profile verify` makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::kv::KvProfile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = KvProfile::from_json(text) {
        exercise(&p);
    }
    let Ok(mut p) = serde_json::from_str::<KvProfile>(text) else {
        return;
    };
    let Ok(digests) = p.compute_digests() else {
        return;
    };
    p.digests = digests;
    if p.validate().is_err() {
        return;
    }
    let json = p.to_json().expect("a valid profile serializes");
    let back = KvProfile::from_json(&json).expect("a resealed valid profile parses back");
    assert_eq!(back, p);
    exercise(&p);
});

/// What `kv-profile verify` asks of a validated profile before touching KV data.
fn exercise(p: &KvProfile) {
    let _ = p.codec_name();
    let codec = p.codec().expect("a validated profile builds its codec");
    let _ = codec.row_bytes();
    let tokens = p.shape.tokens;
    for t in [0, 1, tokens / 2, tokens.saturating_sub(1)] {
        let _ = p.protected.token(t, tokens);
    }
    for l in [0, p.shape.layers - 1] {
        for h in [0, p.shape.kv_heads - 1] {
            let _ = p.protected.stream(l, h);
        }
    }
}

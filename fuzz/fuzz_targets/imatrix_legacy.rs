//! Legacy `.dat` importance-matrix parser (`qforge::quant::imatrix::parse_legacy`): any
//! bytes give `Ok` or `Err`, never a panic, a hang or a large allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = qforge::quant::imatrix::parse_legacy(data) else {
        return;
    };
    assert!(!m.entries.is_empty());
    let values: usize = m.entries.values().map(Vec::len).sum();
    assert!(values * 4 <= data.len(), "more values than the input holds");
});

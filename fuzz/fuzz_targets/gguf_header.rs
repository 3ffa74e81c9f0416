//! GGUF header parser (`qforge::formats::gguf::read_header`): any bytes give `Ok` or
//! `Err`, never a panic, a hang or a large allocation. On `Ok`, the guarantees that
//! `TensorSource` and `qforge inspect` rely on are checked: every tensor's data lies
//! inside the input, and element counts (in either dimension order) and their sum fit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = qforge::formats::gguf::read_header(data) else {
        return;
    };
    assert!(matches!(h.version, 2 | 3));
    assert!(h.alignment.is_power_of_two());
    let mut total: u64 = 0;
    for t in &h.tensors {
        // TensorSource::data slices exactly this range.
        let start = h.data_offset.checked_add(t.offset).expect("start overflows");
        let end = start.checked_add(t.bytes).expect("end overflows");
        assert!(end <= data.len() as u64, "tensor {:?} data past the end", t.name);
        let _ = &data[start as usize..end as usize];
        // TensorInfo::elements() multiplies the reversed shape with overflow checks on.
        let fwd = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let rev = t.ne.iter().rev().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = fwd.expect("element count overflows");
        assert_eq!(rev, Some(n), "tensor {:?}: shape {:?}", t.name, t.ne);
        total = total.checked_add(n).expect("total element count overflows");
    }
    for (_, v) in &h.metadata {
        let _ = (v.to_display(4), v.to_json(4));
    }
});

//! Safetensors shard parser (`qforge::formats::safetensors::read_shard`): any bytes give
//! `Ok` or `Err`, never a panic, a hang or a large allocation. On `Ok`, every tensor's
//! byte range lies inside the input and element counts (in either order) fit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(contents) = qforge::formats::safetensors::read_shard(data, 0) else {
        return;
    };
    let mut total: u64 = 0;
    for t in &contents.tensors {
        let end = t.offset.checked_add(t.bytes).expect("end overflows");
        assert!(end <= data.len() as u64, "tensor {:?} data past the end", t.name);
        let _ = &data[t.offset as usize..end as usize];
        let fwd = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let rev = t.shape.iter().rev().try_fold(1u64, |a, &d| a.checked_mul(d));
        let n = fwd.expect("element count overflows");
        assert_eq!(rev, Some(n), "tensor {:?}: shape {:?}", t.name, t.shape);
        total = total.checked_add(n).expect("total element count overflows");
        let _ = (t.bits_per_weight(), t.ty.as_ggml(), t.ty.to_string());
    }
    for (_, v) in &contents.metadata {
        let _ = v.to_display(4);
    }
});

//! SentencePiece `tokenizer.model` reader (`qforge::convert::vocab::proto::parse_model`):
//! any bytes give `Ok` or `Err`, never a panic; on `Ok` every piece took at least two
//! bytes of input (no allocation beyond the input's size).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = qforge::convert::vocab::proto::parse_model(data) {
        assert!(model.pieces.len() * 2 <= data.len());
        assert!(model.precompiled_charsmap.len() <= data.len());
    }
});

//! Sharded-checkpoint index parser (`qforge::formats::safetensors::read_index`): any
//! bytes give `Ok` or `Err`, never a panic; on `Ok` no shard path can leave the folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = qforge::formats::safetensors::read_index(data) else {
        return;
    };
    for shard in &index.shards {
        assert!(!shard.is_empty());
        assert!(
            Path::new(shard)
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "shard {shard:?} escapes the folder"
        );
        assert!(!shard.chars().any(char::is_control), "{shard:?}");
    }
    for &i in index.weight_map.values() {
        assert!(i < index.shards.len());
    }
});

//! README.md front matter (`qforge::convert::card::front_matter`) and the `general.*`
//! keys derived from it and the folder name: any text gives a map, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::convert::{card, metadata};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let card = card::front_matter(&text);
    let name = text.lines().nth(1).unwrap_or("").to_string();
    let inputs = metadata::Inputs {
        card,
        dir_name: name.clone(),
        params: metadata::ParamCount {
            total: data.len() as u64 * 1_000_003,
            shared: data.len() as u64,
            ..Default::default()
        },
        ..Default::default()
    };
    let kv = metadata::general_keys(&inputs);
    assert_eq!(kv[0].0, "general.type");
    let _ = metadata::id_components(&name, u64::MAX);
    let _ = metadata::id_to_title(&name);
});

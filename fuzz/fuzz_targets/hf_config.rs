//! config.json reader (`qforge::convert::config::HfConfig::parse`) and what the converter
//! derives from it for every registered architecture (hyperparameter keys, generated
//! tensors): any bytes give `Ok` or `Err`, never a panic, a hang or a large allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::convert::arch;
use qforge::convert::config::HfConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = HfConfig::parse(data) else {
        return;
    };
    let _ = cfg.architecture();
    for a in arch::REGISTRY {
        let _ = arch::text_model_params(&cfg, a.gguf_arch, 1);
        let _ = (a.params)(&cfg, a.gguf_arch, 1);
        if let Ok(extra) = (a.extra)(&cfg) {
            for g in extra.tensors {
                assert!(g.values.len() <= 1 << 16, "{} has {} values", g.name, g.values.len());
            }
        }
    }
});

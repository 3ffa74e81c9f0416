//! Logging setup: tracing to stderr, level from `-v` unless `RUST_LOG` is set.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: warnings by default, `-v` info, `-vv` debug,
/// `-vvv` trace; `RUST_LOG` (e.g. `RUST_LOG=qforge=debug`) takes precedence.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

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

/// Logs how long one tensor took, at debug level (`-vv`), when dropped.
pub struct TensorTimer<'a> {
    what: &'static str,
    name: &'a str,
    started: std::time::Instant,
}

impl<'a> TensorTimer<'a> {
    /// Starts timing `what` (`encoded`, `copied`) for tensor `name`.
    pub fn start(what: &'static str, name: &'a str) -> Self {
        TensorTimer {
            what,
            name,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for TensorTimer<'_> {
    fn drop(&mut self) {
        tracing::debug!(
            "{} {}: {:.3} ms",
            self.what,
            crate::output::escape_controls(self.name),
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Logs one planned tensor at info level (`-v`).
pub fn plan_entry(name: &str, in_type: &str, out_type: &str, reason: &str) {
    tracing::info!(
        "plan: {} {in_type} -> {out_type} ({reason})",
        crate::output::escape_controls(name)
    );
}

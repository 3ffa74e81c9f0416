//! Error kinds and the process exit codes they map to.
//!
//! Every failure is an [`anyhow::Error`]. Whether it is the user's input that is at
//! fault (exit 2) or the run itself (exit 1) is decided by whether an [`InvalidInput`]
//! sits anywhere in the error chain. `kv-profile verify` uses [`OverBudget`] for exit 3.

use std::fmt;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure (I/O error, disk full, internal error).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: bad command line or invalid input file.
pub const EXIT_INVALID: u8 = 2;
/// Exit code: a quality budget was exceeded (`kv-profile verify`).
pub const EXIT_OVER_BUDGET: u8 = 3;

/// The user's input (a file, a flag value) is invalid; maps to exit code 2.
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// A measured quality exceeded its budget; maps to exit code 3.
#[derive(Debug)]
pub struct OverBudget(pub String);

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverBudget {}

/// Builds an [`anyhow::Error`] carrying [`InvalidInput`] from a format string.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        ::anyhow::Error::new($crate::error::InvalidInput(format!($($arg)*)))
    };
}

/// Returns early with an [`InvalidInput`] error.
#[macro_export]
macro_rules! bail_invalid {
    ($($arg:tt)*) => {
        return Err($crate::invalid!($($arg)*))
    };
}

/// The exit code an error maps to.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<OverBudget>()) {
        EXIT_OVER_BUDGET
    } else if err.chain().any(|e| e.is::<InvalidInput>()) {
        EXIT_INVALID
    } else {
        EXIT_RUNTIME
    }
}

/// Whether the error is stdout closing early (`qforge inspect x | head`): not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Renders an error chain on one line: `outer: inner: root`. Newlines become spaces and
/// other control characters (which messages quoting an input file may carry) are
/// escaped by [`crate::output::escape_controls`], so the line is safe for a terminal.
pub fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err.chain().map(|e| e.to_string()).collect();
    let mut line = String::new();
    for part in parts {
        if !line.is_empty() {
            if line.ends_with(&part) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&part);
    }
    crate::output::escape_controls(&line.replace('\n', " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn invalid_input_anywhere_in_chain_is_exit_2() {
        let err: anyhow::Error = Err::<(), _>(invalid!("bad magic"))
            .context("reading x.gguf")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_INVALID);
        assert_eq!(one_line(&err), "reading x.gguf: bad magic");
    }

    #[test]
    fn plain_errors_are_runtime() {
        let err = anyhow::anyhow!("disk full");
        assert_eq!(exit_code(&err), EXIT_RUNTIME);
        let err = anyhow::Error::new(OverBudget("tv 0.2 > 0.1".into()));
        assert_eq!(exit_code(&err), EXIT_OVER_BUDGET);
    }

    #[test]
    fn one_line_escapes_control_characters() {
        let err: anyhow::Error = Err::<(), _>(invalid!("unknown dtype \"X\x1b[31m\"\r\nnext"))
            .context("reading a\tb.safetensors")
            .unwrap_err();
        assert_eq!(
            one_line(&err),
            "reading a\\tb.safetensors: unknown dtype \"X\\u{1b}[31m\"\\r next"
        );
    }
}

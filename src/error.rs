//! Error kinds and the process exit codes they map to.
//!
//! Every failure is an [`anyhow::Error`]. Whether it is the user's input that is at
//! fault (exit 2) or the run itself (exit 1) is decided by whether an [`InvalidInput`]
//! sits anywhere in the error chain. `kv-profile verify` uses [`OverBudget`] for exit 3.
//!
//! An [`InvalidInput`] carries an [`InvalidKind`] so that code and tests tell errors apart
//! by variant, not by message text: `invalid!(kind: Truncated, "...")` sets it,
//! `invalid!("...")` leaves it [`InvalidKind::Other`]; [`invalid_kind`] reads it back.

use std::fmt;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure (I/O error, disk full, internal error).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: bad command line or invalid input file.
pub const EXIT_INVALID: u8 = 2;
/// Exit code: a quality budget was exceeded (`kv-profile verify`).
pub const EXIT_OVER_BUDGET: u8 = 3;

/// What is wrong with an input, for matching without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    /// Not classified (the untyped `invalid!("...")`).
    Other,
    /// The input ends before a structure it announces.
    Truncated,
    /// Not a format qforge reads (magic bytes).
    BadMagic,
    /// A format version or byte order qforge does not read.
    UnsupportedVersion,
    /// A count or length too large for the input to hold, refused before allocating.
    Implausible,
    /// An offset or range outside the input.
    OutOfBounds,
    /// Size arithmetic (element or byte counts, offsets) overflows.
    Overflow,
    /// An unknown type id or type name.
    UnknownType,
    /// A shape that does not fit: dimensions, row length against the block size, byte
    /// size against shape and type.
    BadShape,
    /// Layout rules broken: alignment, data offsets out of order, data that does not
    /// exactly fill its space.
    BadLayout,
    /// Text that is not valid UTF-8 or not valid JSON.
    BadEncoding,
    /// A name given twice.
    Duplicate,
    /// A checksum or digest does not match the bytes it covers.
    Checksum,
    /// Parts of the input disagree with each other, or a part its other parts require is
    /// missing.
    Inconsistent,
    /// The input cannot be opened, or is not a regular file.
    Unreadable,
    /// A command-line value or option combination that is refused.
    BadArgument,
}

/// The user's input (a file, a flag value) is invalid; maps to exit code 2.
#[derive(Debug)]
pub struct InvalidInput {
    /// What kind of problem.
    pub kind: InvalidKind,
    /// The message shown (one line, after `error: ` and any context).
    pub message: String,
}

impl InvalidInput {
    /// An error of `kind` with `message`.
    pub fn new(kind: InvalidKind, message: String) -> Self {
        InvalidInput { kind, message }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
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

/// Builds an [`anyhow::Error`] carrying [`InvalidInput`] from a format string:
/// `invalid!(kind: Truncated, "...", args)` with an [`InvalidKind`], or
/// `invalid!("...", args)` for [`InvalidKind::Other`].
#[macro_export]
macro_rules! invalid {
    (kind: $kind:ident, $($arg:tt)*) => {
        ::anyhow::Error::new($crate::error::InvalidInput::new(
            $crate::error::InvalidKind::$kind,
            format!($($arg)*),
        ))
    };
    ($($arg:tt)*) => {
        ::anyhow::Error::new($crate::error::InvalidInput::new(
            $crate::error::InvalidKind::Other,
            format!($($arg)*),
        ))
    };
}

/// Returns early with an [`InvalidInput`] error (same arguments as [`invalid!`]).
#[macro_export]
macro_rules! bail_invalid {
    ($($arg:tt)*) => {
        return Err($crate::invalid!($($arg)*))
    };
}

/// The kind of the first [`InvalidInput`] in the error chain, if any.
pub fn invalid_kind(err: &anyhow::Error) -> Option<InvalidKind> {
    err.chain()
        .find_map(|e| e.downcast_ref::<InvalidInput>())
        .map(|e| e.kind)
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
        assert_eq!(invalid_kind(&err), Some(InvalidKind::Other));
    }

    #[test]
    fn kinds_survive_context_and_do_not_change_the_message() {
        let n = 3;
        let err: anyhow::Error = Err::<(), _>(invalid!(kind: Truncated, "needs {n} bytes"))
            .context("reading x.gguf")
            .unwrap_err();
        assert_eq!(invalid_kind(&err), Some(InvalidKind::Truncated));
        assert_eq!(exit_code(&err), EXIT_INVALID);
        assert_eq!(one_line(&err), "reading x.gguf: needs 3 bytes");
        assert_eq!(invalid_kind(&anyhow::anyhow!("disk full")), None);
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

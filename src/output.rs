//! Helpers for what commands print and write: JSON documents, text reports (silenced by
//! `-q`), human-readable sizes, [`escape_controls`] for text that came from an input
//! file, and [`check_output_path`] for output paths.

use anyhow::Result;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `-q/--quiet`: no text report, no progress bar.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `-q/--quiet` for the whole process (the binary does, once, before running).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given: text reports and progress bars are left out.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes `value` as pretty JSON plus a newline to stdout (also under `-q`: the user
/// asked for the document).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Writes a text report to stdout as is; nothing under `-q`.
pub fn print_text(text: &str) -> Result<()> {
    if quiet() {
        return Ok(());
    }
    write_stdout(text)
}

/// Checks an output path before any work: its parent folder must exist, and a file
/// output must not be an existing folder. Invalid input (exit 2) otherwise.
pub fn check_output_path(path: &Path, folder: bool) -> Result<()> {
    let shown = escape_controls(&path.display().to_string()).into_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        let what = if parent.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        crate::bail_invalid!(
            "output {shown}: {} {what}",
            escape_controls(&parent.display().to_string())
        );
    }
    if !folder && path.is_dir() {
        crate::bail_invalid!("output {shown} is an existing folder; give a file path");
    }
    Ok(())
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Makes text from an input file (a metadata key, a tensor name, a path, an error
/// message quoting either) safe to print on a terminal: control characters (C0, DEL, C1)
/// and the Unicode bidirectional controls are written as Rust's `escape_debug` writes
/// them (`\t`, `\r`, `\u{1b}`, `\u{202e}`); everything else, backslashes and quotes
/// included, is kept as is. Text with nothing to escape is borrowed.
///
/// Every human-readable output goes through this; JSON output escapes by itself.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal may act on instead of showing: controls, and the bidi
/// embeddings, overrides, isolates and marks that reorder what is shown.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `1536` -> `"1.50 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_output_path(&d.join("x.gguf"), false).is_ok());
        assert!(check_output_path(&d.join("new-folder"), true).is_ok());
        assert!(check_output_path(Path::new("relative.gguf"), false).is_ok());
        let missing = check_output_path(&d.join("no/x.gguf"), false).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&missing),
            crate::error::EXIT_INVALID
        );
        assert!(missing.to_string().ends_with("does not exist"), "{missing}");
        assert!(check_output_path(d, false).is_err());
        assert!(check_output_path(d, true).is_ok());
        std::fs::write(d.join("f"), b"").unwrap();
        let under_file = check_output_path(&d.join("f/x"), false).unwrap_err();
        assert!(under_file.to_string().ends_with("is not a folder"));
    }

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn escape_controls_escapes_only_what_a_terminal_acts_on() {
        assert!(matches!(
            escape_controls("blk.0 \"x\" \\ é"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("w\x1b[2J\r\t\n\0\x7f\u{9b}\u{202e}x"),
            "w\\u{1b}[2J\\r\\t\\n\\0\\u{7f}\\u{9b}\\u{202e}x"
        );
        for c in (0..0x20u32).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let e = escape_controls(&c.to_string()).into_owned();
            assert!(
                e.starts_with('\\') && !e.chars().any(char::is_control),
                "{e:?}"
            );
        }
    }
}

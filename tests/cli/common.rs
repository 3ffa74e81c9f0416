//! Helpers shared by the end-to-end tests: run the real binary, build hostile files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture path.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// Runs the real `qforge` binary.
pub fn qforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running qforge")
}

/// Runs `qforge` with a path argument last.
pub fn qforge_on(args: &[&str], path: &Path) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let p = path.to_str().unwrap();
    all.push(p);
    qforge(&all)
}

/// Stdout parsed as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "qforge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// Asserts a clean invalid-input failure: exit 2, one `error:` line, no panic.
pub fn assert_invalid(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

/// Little-endian GGUF builder for hand-made (often broken) headers.
#[derive(Default)]
pub struct GgufBytes(pub Vec<u8>);

impl GgufBytes {
    /// Magic, version and counts.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut g = GgufBytes(b"GGUF".to_vec());
        g.u32(version).u64(n_tensors).u64(n_kv);
        g
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    /// A tensor info: name, dims (ne order), type id, offset.
    pub fn tensor(&mut self, name: &[u8], ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    pub fn data(&mut self, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

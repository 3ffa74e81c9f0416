//! llama.cpp's CPU matmul as a `bench-gemm` peer: `tools/ggml-peer` (a small C program built
//! against ggml 0.25.3, not by cargo) times ggml's `MUL_MAT` through ggml-backend on the same
//! weight bytes, token counts, threads and rotation as our strategies, in its repacked
//! `CPU_REPACK` buffer (as llama.cpp runs it) and in the plain CPU buffer. This module finds
//! the program, runs it as a subprocess and reads back its JSON line and outputs.

use super::{QuantMatrix, WeightType};
use crate::bail_invalid;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `--backends` name of the peer.
pub const NAME: &str = "llamacpp";

/// The environment variable naming the peer program when `--llamacpp-peer` is not given.
pub const ENV: &str = "QFORGE_GGML_PEER";

/// The schema of the peer's JSON line.
const PEER_SCHEMA: &str = "qforge.ggml-peer/1";

/// The report names of the two modes (the peer's `mode` field).
pub const MODES: [(&str, &str); 2] = [("repack", "llamacpp-repack"), ("plain", "llamacpp-plain")];

/// The peer program: `explicit` (`--llamacpp-peer`, which must exist), else [`ENV`]; `Ok(Err)`
/// holds why there is none (the peer is then reported as skipped).
pub fn locate(explicit: Option<&Path>) -> Result<std::result::Result<PathBuf, String>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail_invalid!("--llamacpp-peer {}: no such file", p.display());
        }
        return Ok(Ok(p.to_path_buf()));
    }
    Ok(match std::env::var_os(ENV) {
        Some(p) if Path::new(&p).is_file() => Ok(PathBuf::from(p)),
        Some(p) => Err(format!(
            "{ENV}={} is not a file (tools/ggml-peer/make.sh builds it)",
            Path::new(&p).display()
        )),
        None => Err(format!(
            "no ggml peer: pass --llamacpp-peer PATH or set {ENV} (tools/ggml-peer/make.sh builds it)"
        )),
    })
}

/// The ggml type name the peer takes for `ty`; `Err` with why for a type ggml lacks.
pub fn ggml_name(ty: WeightType) -> std::result::Result<&'static str, String> {
    ty.ggml_type()
        .map(|t| t.name())
        .ok_or_else(|| format!("ggml has no {} type: no llama.cpp peer", ty.name()))
}

/// One mode the peer ran.
#[derive(Debug)]
pub struct ModeRun {
    /// Report name (`llamacpp-repack`, `llamacpp-plain`).
    pub backend: &'static str,
    /// ggml's buffer type (`CPU_REPACK`, `CPU`).
    pub buffer: String,
    /// Bytes one weight copy holds in that buffer.
    pub weight_bytes: u64,
    /// ggml's work buffer at the largest m plus the f32 activations and outputs.
    pub scratch_bytes: u64,
    /// `(median_ms, min_ms)` per m, in the order given.
    pub times: Vec<(f64, f64)>,
    /// The outputs of the last timed call of each m (m x n, token-major).
    pub outputs: Vec<Vec<f32>>,
}

/// What the peer reported: the modes that ran, and `(backend, reason)` for those that did not.
#[derive(Debug)]
pub struct PeerRun {
    /// Modes that ran.
    pub modes: Vec<ModeRun>,
    /// Modes that could not run, with why.
    pub skipped: Vec<(&'static str, String)>,
}

#[derive(Deserialize)]
struct PeerLine {
    schema: String,
    modes: Vec<PeerMode>,
}

#[derive(Deserialize)]
struct PeerMode {
    mode: String,
    skipped: Option<String>,
    buffer: Option<String>,
    weight_bytes: Option<u64>,
    work_bytes: Option<u64>,
    io_bytes: Option<u64>,
    #[serde(default)]
    results: Vec<PeerResult>,
}

#[derive(Deserialize)]
struct PeerResult {
    m: usize,
    median_ms: f64,
    min_ms: f64,
}

/// What one peer run measures: the weights, each m's activations, and the rotation.
pub struct PeerSpec<'a> {
    /// The weights (a ggml type).
    pub w: &'a QuantMatrix,
    /// Token counts.
    pub m: &'a [usize],
    /// The activations of each m (m x k).
    pub inputs: &'a [Vec<f32>],
    /// Threads.
    pub threads: usize,
    /// Weight copies rotated through.
    pub copies: usize,
    /// Timed calls per m.
    pub reps: usize,
}

/// Runs the peer program at `peer` on `spec` (files in a fresh temporary folder).
/// `Ok(Err)`: the peer refused the input (exit 2) and said why.
pub fn run(peer: &Path, spec: &PeerSpec<'_>) -> Result<std::result::Result<PeerRun, String>> {
    let ty = match ggml_name(spec.w.ty) {
        Ok(t) => t,
        Err(why) => return Ok(Err(why)),
    };
    let dir = TempDir::new()?;
    let (wpath, xpath) = (dir.0.join("weights.bin"), dir.0.join("x.f32"));
    std::fs::write(&wpath, &*spec.w.data).context("writing the peer's weights")?;
    let x: Vec<u8> = spec
        .inputs
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&xpath, x).context("writing the peer's activations")?;
    let ms: Vec<String> = spec.m.iter().map(usize::to_string).collect();
    let out = Command::new(peer)
        .arg(ty)
        .arg(spec.w.n.to_string())
        .arg(spec.w.k.to_string())
        .arg(ms.join(","))
        .arg(spec.threads.to_string())
        .arg(spec.copies.to_string())
        .arg(spec.reps.to_string())
        .args([&wpath, &xpath, &dir.0])
        .output()
        .with_context(|| format!("running the ggml peer {}", peer.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) {
        let line = stderr.lines().find(|l| l.starts_with("error: "));
        return Ok(Err(line
            .unwrap_or("the ggml peer refused the input")
            .into()));
    }
    if !out.status.success() {
        bail!(
            "the ggml peer {} failed ({}): {}",
            peer.display(),
            out.status,
            stderr.trim()
        );
    }
    let line: PeerLine = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "reading the ggml peer's JSON line: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    if line.schema != PEER_SCHEMA {
        bail!(
            "the ggml peer speaks {}, not {PEER_SCHEMA}: rebuild it (tools/ggml-peer/make.sh)",
            line.schema
        );
    }
    let mut run = PeerRun {
        modes: Vec::new(),
        skipped: Vec::new(),
    };
    for mode in line.modes {
        let Some(&(_, backend)) = MODES.iter().find(|(m, _)| *m == mode.mode) else {
            bail!("the ggml peer reported an unknown mode {:?}", mode.mode);
        };
        if let Some(why) = mode.skipped {
            run.skipped.push((backend, why));
            continue;
        }
        let got: Vec<usize> = mode.results.iter().map(|r| r.m).collect();
        if got != spec.m {
            bail!("the ggml peer timed m = {got:?}, not {:?}", spec.m);
        }
        let outputs = spec
            .m
            .iter()
            .map(|m| read_f32(&dir.0.join(format!("{}-{m}.f32", mode.mode)), m * spec.w.n))
            .collect::<Result<_>>()?;
        run.modes.push(ModeRun {
            backend,
            buffer: mode.buffer.unwrap_or_default(),
            weight_bytes: mode.weight_bytes.unwrap_or(0),
            scratch_bytes: mode.work_bytes.unwrap_or(0) + mode.io_bytes.unwrap_or(0),
            times: mode
                .results
                .iter()
                .map(|r| (r.median_ms, r.min_ms))
                .collect(),
            outputs,
        });
    }
    Ok(Ok(run))
}

/// `len` little-endian f32 values from `path`.
fn read_f32(path: &Path, len: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() != len * 4 {
        bail!(
            "{}: {} bytes, want {}",
            path.display(),
            bytes.len(),
            len * 4
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// A folder under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("qforge-ggml-peer-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations() {
        assert_eq!(ggml_name(WeightType::Q4K), Ok("Q4_K"));
        assert!(ggml_name(WeightType::Nf4).unwrap_err().contains("nf4"));
        let err = locate(Some(Path::new("/nonexistent/ggml-peer"))).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
    }

    #[test]
    fn a_peer_that_refuses_is_skipped_and_one_that_fails_is_an_error() {
        let w = QuantMatrix::random(WeightType::Q8_0, 16, 64, 1).unwrap();
        let inputs = vec![vec![0f32; 64]];
        let spec = PeerSpec {
            w: &w,
            m: &[1],
            inputs: &inputs,
            threads: 1,
            copies: 1,
            reps: 1,
        };
        let dir = TempDir::new().unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.0.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let refuses = script("refuses", "echo 'error: bad shape' >&2; exit 2");
        assert_eq!(
            run(&refuses, &spec).unwrap().unwrap_err(),
            "error: bad shape"
        );
        let fails = script("fails", "exit 1");
        assert!(run(&fails, &spec).is_err());
        let wrong = script("wrong", "echo '{\"schema\":\"x/9\",\"modes\":[]}'");
        assert!(format!("{:#}", run(&wrong, &spec).unwrap_err()).contains("x/9"));
    }
}

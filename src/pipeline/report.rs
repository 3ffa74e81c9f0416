//! The reports of `quantize` (every `--format`) and `export-native`: the one conversion
//! [`Report`], built one way ([`Report::new`], [`Report::push`], [`Report::finish`]) and
//! rendered one way (itself as JSON `qforge.quantize/2`, see `docs/quantize-json.md`, or
//! [`Report::render_text`]); and the summaries of a QNAT v1 migration ([`Migrated`]) and
//! of a dequantization ([`Dequantized`]).

use super::ErrorStats;
use crate::bail_invalid;
use crate::formats::TensorInfo;
use crate::output::{escape_controls, human_bytes};
use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};

/// Schema identifier of `quantize --json` (and `export-native --json`).
pub const SCHEMA: &str = "qforge.quantize/2";

/// The `quantize --json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Input path.
    pub input: String,
    /// Output path (null for --dry-run).
    pub output: Option<String>,
    /// Requested type or mix name as normalized (`Q4_K_M`).
    #[serde(rename = "type")]
    pub qtype: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Worker threads used.
    pub threads: usize,
    /// Per-tensor plan and results, in output order.
    pub tensors: Vec<TensorReport>,
    /// Sums.
    pub totals: Totals,
    /// SHA-256 of the output file (null unless `--digest`, and for --dry-run).
    pub sha256: Option<String>,
}

/// One tensor of the report.
#[derive(Debug, Serialize)]
pub struct TensorReport {
    /// Name (as in the input).
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<u64>,
    /// Input type name.
    pub in_type: String,
    /// Output type name.
    pub out_type: String,
    /// Input bytes.
    pub in_bytes: u64,
    /// Output bytes.
    pub out_bytes: u64,
    /// Why this output type (`mix: attn_v`, `override`, `copy: 1-D`, ...).
    pub reason: String,
    /// Relative RMSE of the encoded tensor against its input, over finite values (0 when
    /// copied unchanged; null for another tensor in a dry run).
    pub rel_rmse: Option<f64>,
    /// NaN or infinite input values (null when copied or dry run).
    pub non_finite: Option<u64>,
    /// Elements (for the totals; not in the JSON, the shape says it).
    #[serde(skip)]
    pub elements: u64,
    /// Whether it is (or, in a dry run, would be) encoded rather than copied.
    #[serde(skip)]
    pub encoded: bool,
}

impl TensorReport {
    /// The row of source tensor `t` written (or planned) as `out_type`.
    pub fn new(
        t: &TensorInfo,
        name: &str,
        out_type: String,
        out_bytes: u64,
        reason: String,
    ) -> TensorReport {
        TensorReport {
            name: name.to_string(),
            shape: t.shape.clone(),
            in_type: t.ty.to_string(),
            out_type,
            in_bytes: t.bytes,
            out_bytes,
            reason,
            rel_rmse: None,
            non_finite: None,
            elements: t.elements(),
            encoded: false,
        }
    }

    /// Marks it encoded, with the encoder's statistics once known.
    pub fn encoded(mut self, stats: Option<ErrorStats>) -> TensorReport {
        self.encoded = true;
        self.set_stats(stats);
        self
    }

    /// Marks it copied unchanged (its bytes are the input's): its error is exactly 0.
    /// Nothing is read, so `non_finite` stays unknown (null).
    pub fn copied_unchanged(mut self) -> TensorReport {
        self.rel_rmse = Some(0.0);
        self
    }

    /// Records the encoder's statistics (`None`: the row keeps what it has).
    pub fn set_stats(&mut self, stats: Option<ErrorStats>) {
        if let Some(s) = stats {
            self.rel_rmse = Some(s.rel_rmse());
            self.non_finite = Some(s.non_finite);
        }
    }
}

/// Totals of the report.
#[derive(Debug, Serialize, Default)]
pub struct Totals {
    /// Tensors written.
    pub tensors: usize,
    /// Tensors encoded (the rest are copied).
    pub quantized: usize,
    /// Elements.
    pub elements: u64,
    /// Input tensor bytes.
    pub in_bytes: u64,
    /// Output tensor bytes.
    pub out_bytes: u64,
    /// Output file size.
    pub file_bytes: u64,
    /// Output bits per weight over all tensors.
    pub bits_per_weight: f64,
    /// Wall-clock seconds of the encode-and-write phase.
    pub seconds: f64,
    /// Elements encoded per second.
    pub elements_per_second: f64,
}

impl Report {
    /// An empty report; `threads` `None` means all cores.
    pub fn new(
        input: &Path,
        output: Option<&Path>,
        qtype: String,
        dry_run: bool,
        threads: Option<usize>,
    ) -> Report {
        Report {
            schema: SCHEMA,
            input: input.display().to_string(),
            output: output.map(|p| p.display().to_string()),
            qtype,
            dry_run,
            threads: threads.unwrap_or_else(rayon::current_num_threads),
            tensors: Vec::new(),
            totals: Totals::default(),
            sha256: None,
        }
    }

    /// Adds a tensor row (in output order) and logs it as a plan entry (`-v`).
    pub fn push(&mut self, row: TensorReport) {
        crate::logging::plan_entry(&row.name, &row.in_type, &row.out_type, &row.reason);
        self.tensors.push(row);
    }

    /// Computes the totals from the rows; `seconds` is 0 and `sha256` `None` for a dry run.
    pub fn finish(&mut self, file_bytes: u64, seconds: f64, sha256: Option<String>) {
        let rows = &self.tensors;
        let mut t = Totals {
            tensors: rows.len(),
            quantized: rows.iter().filter(|r| r.encoded).count(),
            elements: rows.iter().map(|r| r.elements).sum(),
            in_bytes: rows.iter().map(|r| r.in_bytes).sum(),
            out_bytes: rows.iter().map(|r| r.out_bytes).sum(),
            file_bytes,
            seconds,
            ..Totals::default()
        };
        if t.elements > 0 {
            t.bits_per_weight = t.out_bytes as f64 * 8.0 / t.elements as f64;
        }
        if seconds > 0.0 {
            let encoded: u64 = rows.iter().filter(|r| r.encoded).map(|r| r.elements).sum();
            t.elements_per_second = encoded as f64 / seconds;
        }
        self.totals = t;
        self.sha256 = sha256;
    }

    /// Finishes a dry run (nothing written), or runs `write` on the thread pool and
    /// records what it returns: each row's encoder statistics and the file's SHA-256
    /// (when one was computed).
    pub fn write_or_plan(
        mut self,
        dry_run: bool,
        output: Option<&Path>,
        file_bytes: u64,
        threads: Option<usize>,
        write: impl FnOnce(&Path) -> Result<super::gguf::Written> + Send,
    ) -> Result<Report> {
        let out = match (dry_run, output) {
            (false, Some(out)) => out,
            (false, None) => bail_invalid!("an output path is needed unless --dry-run"),
            (true, _) => {
                self.finish(file_bytes, 0.0, None);
                return Ok(self);
            }
        };
        let started = std::time::Instant::now();
        let (stats, digest) = super::with_threads(threads, || write(out))??;
        for (row, s) in self.tensors.iter_mut().zip(stats) {
            row.set_stats(s);
        }
        self.finish(
            file_bytes,
            started.elapsed().as_secs_f64(),
            digest.map(|d| crate::formats::atomic::hex(&d)),
        );
        Ok(self)
    }

    /// The human-readable report (`--json` prints the report itself).
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let names: Vec<_> = self
            .tensors
            .iter()
            .map(|t| escape_controls(&t.name))
            .collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(4);
        for (name, t) in names.iter().zip(&self.tensors) {
            let mut rmse = t
                .rel_rmse
                .map(|e| format!("rel-rmse {e:.5}"))
                .unwrap_or_default();
            if let Some(n) = t.non_finite.filter(|&n| n > 0) {
                rmse += &format!("  {n} non-finite");
            }
            let _ = writeln!(
                s,
                "{name:width$}  {:>6} -> {:<7} {:>12}  {:28} {rmse}",
                t.in_type,
                t.out_type,
                human_bytes(t.out_bytes),
                t.reason
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "{} tensors ({} quantized), {} -> {}, {:.3} bits per weight",
            t.tensors,
            t.quantized,
            human_bytes(t.in_bytes),
            human_bytes(t.file_bytes),
            t.bits_per_weight
        );
        match &self.output {
            Some(out) if !self.dry_run => {
                let digest = self
                    .sha256
                    .as_ref()
                    .map(|sha| format!(", sha256 {sha}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "wrote {} in {:.2} s ({:.1} M elements/s){digest}",
                    escape_controls(out),
                    t.seconds,
                    t.elements_per_second / 1e6
                );
            }
            _ => {
                let _ = writeln!(s, "dry run: nothing written");
            }
        }
        s
    }
}

/// A QNAT v1 file migrated to v2 (`export-native` of a v1 file).
#[derive(Debug)]
pub struct Migrated {
    /// The v1 file.
    pub input: PathBuf,
    /// The v2 file written.
    pub output: PathBuf,
    /// SHA-256 of the output.
    pub sha256: String,
}

impl Migrated {
    /// The `--json` document (`qforge.export-native-migrate/1`).
    pub fn summary(&self) -> Json {
        json!({
            "schema": "qforge.export-native-migrate/1",
            "input": self.input.display().to_string(),
            "output": self.output.display().to_string(),
            "from_version": 1,
            "to_version": 2,
            "sha256": self.sha256,
        })
    }

    /// The one-line text report.
    pub fn render_text(&self) -> String {
        format!(
            "migrated QNAT v1 {} to v2 {}\n",
            self.input.display(),
            self.output.display()
        )
    }
}

/// A QNAT file dequantized to f32 safetensors (`export-native --dequantize`).
#[derive(Debug)]
pub struct Dequantized {
    /// The QNAT file.
    pub input: PathBuf,
    /// The safetensors file written.
    pub output: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// SHA-256 of the output.
    pub sha256: String,
}

impl Dequantized {
    /// The `--json` document (`qforge.export-native-dequantize/1`).
    pub fn summary(&self) -> Json {
        json!({
            "schema": "qforge.export-native-dequantize/1",
            "input": self.input.display().to_string(),
            "output": self.output.display().to_string(),
            "tensors": self.tensors,
            "sha256": self.sha256,
        })
    }

    /// The one-line text report.
    pub fn render_text(&self) -> String {
        format!(
            "dequantized {} tensors of {} to {}\n",
            self.tensors,
            self.input.display(),
            self.output.display()
        )
    }
}

/// One written tensor (quantized or kept) of the bnb and QNAT writers.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Source tensor name.
    pub name: String,
    /// `NF4`/`FP4`, a QNAT scheme, or the kept dtype.
    pub out_type: String,
    /// Bytes written for it (all its entries).
    pub out_bytes: u64,
    /// Error statistics when encoded.
    pub stats: Option<ErrorStats>,
    /// Why it was encoded or kept.
    pub reason: &'static str,
}

impl Report {
    /// Adds the rows of writers that report [`Outcome`]s, one per source tensor in order;
    /// fails (invalid input) on non-finite inputs unless allowed.
    pub fn push_outcomes(
        &mut self,
        tensors: &[TensorInfo],
        outcomes: &[Outcome],
        allow_nonfinite: bool,
    ) -> Result<()> {
        for (t, o) in tensors.iter().zip(outcomes) {
            check_finite(&t.name, o.stats, allow_nonfinite)?;
            let row = TensorReport::new(
                t,
                &t.name,
                o.out_type.clone(),
                o.out_bytes,
                o.reason.to_string(),
            );
            self.push(match o.stats {
                Some(s) => row.encoded(Some(s)),
                None => row,
            });
        }
        Ok(())
    }
}

/// Fails (invalid input) when an encoded tensor had NaN or infinite inputs, unless allowed.
pub fn check_finite(name: &str, stats: Option<ErrorStats>, allow_nonfinite: bool) -> Result<()> {
    match stats {
        Some(s) if s.non_finite > 0 && !allow_nonfinite => bail_invalid!(
            "tensor {name} has {} NaN or infinite values; pass --allow-nonfinite to quantize it anyway",
            s.non_finite
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{ggml_type::GgmlType, TensorType};

    fn info(name: &str, shape: Vec<u64>, bytes: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ty: TensorType::Ggml(GgmlType::F32),
            shape,
            file: 0,
            offset: 0,
            bytes,
        }
    }

    #[test]
    fn totals_from_rows() {
        let stats = ErrorStats {
            sum_sq_err: 1.0,
            sum_sq: 4.0,
            non_finite: 0,
        };
        let mut r = Report::new(Path::new("in"), None, "Q8_0".into(), true, Some(3));
        let w = info("w", vec![4, 64], 1024);
        let n = info("n", vec![64], 256);
        r.push(
            TensorReport::new(&w, "w", "Q8_0".into(), 272, "weight".into()).encoded(Some(stats)),
        );
        r.push(TensorReport::new(
            &n,
            "n",
            "F32".into(),
            256,
            "copy: 1-D".into(),
        ));
        r.finish(600, 2.0, Some("ab".into()));
        let t = &r.totals;
        assert_eq!((t.tensors, t.quantized, t.elements), (2, 1, 320));
        assert_eq!((t.in_bytes, t.out_bytes, t.file_bytes), (1280, 528, 600));
        assert_eq!(t.bits_per_weight, 528.0 * 8.0 / 320.0);
        assert_eq!(t.elements_per_second, 128.0);
        assert_eq!(r.tensors[0].rel_rmse, Some(0.5));
        assert_eq!(r.threads, 3);
        let text = r.render_text();
        assert!(text.contains("2 tensors (1 quantized)"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert!(
            j["tensors"][0].get("elements").is_none(),
            "not in the schema"
        );
        assert_eq!(j["schema"], SCHEMA);
    }

    #[test]
    fn non_finite_needs_permission() {
        let s = ErrorStats {
            non_finite: 2,
            ..ErrorStats::default()
        };
        assert!(check_finite("t", Some(s), false)
            .unwrap_err()
            .to_string()
            .contains("2 NaN or infinite"));
        assert!(check_finite("t", Some(s), true).is_ok());
        assert!(check_finite("t", None, false).is_ok());
    }
}

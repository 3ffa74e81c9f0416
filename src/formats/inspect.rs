//! What `inspect` reports of a model file: format, metadata, tensor table and totals
//! ([`inspect`]), as JSON or text ([`Inspection::render_text`]).
//!
//! Reads headers only (and the tensor data for `verify`). The JSON schema
//! (`qforge.inspect/1`) is documented in `docs/inspect-json.md`; fields are only ever
//! added, never renamed or removed, within one schema version.

use super::gguf::Value;
use super::qnat::qlora::V1File;
use super::{TensorInfo, TensorSource};
use crate::output::{escape_controls, human_bytes};
use anyhow::Result;
use regex::Regex;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

/// Schema identifier of `inspect --json`.
pub const SCHEMA: &str = "qforge.inspect/1";

/// The `inspect --json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Path as given.
    pub path: String,
    /// `gguf`, `safetensors` or `qnat`.
    pub format: &'static str,
    /// Format version, or null where the format has none (safetensors).
    pub version: Option<u32>,
    /// Tensor data alignment in bytes, or null.
    pub alignment: Option<u64>,
    /// The files read (several for a sharded checkpoint).
    pub files: Vec<FileEntry>,
    /// Metadata in file order.
    pub metadata: Vec<MetaEntry>,
    /// Tensors (after `--filter`) in file order.
    pub tensors: Vec<TensorEntry>,
    /// Sums over `tensors`.
    pub totals: Totals,
    /// `qlora-rs-v1` or `qlora-rs-v2` for a qlora-rs QNAT file (read as it is); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<&'static str>,
    /// Checksum verification (`--verify`, QNAT only); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,
}

/// Result of `--verify`.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Tensors checked.
    pub tensors: usize,
    /// Whether every tensor's sha256 (and section padding) matched.
    pub ok: bool,
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Verification {
    /// The result for `tensors` checked with these problems.
    pub fn new(tensors: usize, problems: Vec<String>) -> Self {
        Verification {
            tensors,
            ok: problems.is_empty(),
            problems,
        }
    }
}

/// One input file.
#[derive(Debug, Serialize)]
pub struct FileEntry {
    /// Path.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// One metadata key.
#[derive(Debug, Serialize)]
pub struct MetaEntry {
    /// Key.
    pub key: String,
    /// Value type (`u32`, `string`, `array`, ...).
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Element type of an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_type: Option<&'static str>,
    /// Element count of an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    /// The value; arrays cut to `--max-array` elements.
    pub value: Json,
}

/// One tensor.
#[derive(Debug, Serialize)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// Type name (`Q4_K`, `F32`, `BF16`, ...).
    #[serde(rename = "type")]
    pub ty: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<u64>,
    /// Number of elements.
    pub elements: u64,
    /// Bytes of data.
    pub bytes: u64,
    /// Stored bits per weight.
    pub bits_per_weight: f64,
    /// Index into `files`.
    pub file: usize,
    /// Absolute offset of the data in that file.
    pub offset: u64,
    /// How a qlora-rs tensor is stored (qlora-rs files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qlora: Option<QloraTensor>,
}

/// How one tensor of a qlora-rs file is stored.
#[derive(Debug, Serialize)]
pub struct QloraTensor {
    /// Elements per block (the channel size for per-channel quantization).
    pub block_size: u32,
    /// Whether its scales are double-quantized (8-bit codes and one f32 factor).
    pub double_quant: bool,
    /// Whether exact f32 scales are stored (always except qlora-rs 1.1+ double quant).
    pub exact_scales: bool,
    /// Whether f32 zero points follow the scales.
    pub zero_points: bool,
    /// Per-channel quantization (version 2 flag; null in version 1, which does not say).
    pub per_channel: Option<bool>,
}

/// Totals over the listed tensors.
#[derive(Debug, Serialize, Default)]
pub struct Totals {
    /// Number of tensors.
    pub tensors: usize,
    /// Sum of elements.
    pub elements: u64,
    /// Sum of tensor bytes.
    pub bytes: u64,
    /// `bytes * 8 / elements`.
    pub bits_per_weight: f64,
    /// The same sums per type, by type name.
    pub by_type: BTreeMap<String, TypeTotals>,
}

/// Sums for one type.
#[derive(Debug, Serialize, Default)]
pub struct TypeTotals {
    /// Number of tensors.
    pub tensors: usize,
    /// Sum of elements.
    pub elements: u64,
    /// Sum of bytes.
    pub bytes: u64,
}

fn bpw(bytes: u64, elements: u64) -> f64 {
    if elements == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / elements as f64
    }
}

/// Builds the report for an opened source.
pub fn build_report(src: &TensorSource, filter: Option<&Regex>, max_array: usize) -> Report {
    let tensors: Vec<&TensorInfo> = src
        .tensors
        .iter()
        .filter(|t| filter.is_none_or(|re| re.is_match(&t.name)))
        .collect();
    let mut totals = Totals::default();
    for t in &tensors {
        totals.tensors += 1;
        totals.elements += t.elements();
        totals.bytes += t.bytes;
        let e = totals.by_type.entry(t.ty.to_string()).or_default();
        e.tensors += 1;
        e.elements += t.elements();
        e.bytes += t.bytes;
    }
    totals.bits_per_weight = bpw(totals.bytes, totals.elements);
    Report {
        schema: SCHEMA,
        path: src.path.display().to_string(),
        format: src.format.name(),
        version: src.version,
        alignment: src.alignment,
        files: src
            .files
            .iter()
            .map(|f| FileEntry {
                path: f.path.display().to_string(),
                bytes: f.len(),
            })
            .collect(),
        metadata: src
            .metadata
            .iter()
            .map(|(k, v)| meta_entry(k, v, max_array))
            .collect(),
        tensors: tensors
            .iter()
            .map(|t| TensorEntry {
                name: t.name.clone(),
                ty: t.ty.to_string(),
                shape: t.shape.clone(),
                elements: t.elements(),
                bytes: t.bytes,
                bits_per_weight: t.bits_per_weight(),
                file: t.file,
                offset: t.offset,
                qlora: None,
            })
            .collect(),
        totals,
        layout: None,
        verify: None,
    }
}

fn meta_entry(key: &str, v: &Value, max_array: usize) -> MetaEntry {
    let (element_type, len) = match v {
        Value::Array(elem, values) => (Some(elem.name()), Some(values.len())),
        _ => (None, None),
    };
    MetaEntry {
        key: key.to_string(),
        ty: v.value_type().name(),
        element_type,
        len,
        value: v.to_json(max_array),
    }
}

/// An inspected source: the report, and the source its text rendering also reads.
pub struct Inspection {
    /// The opened source.
    pub source: TensorSource,
    /// The `inspect --json` document.
    pub report: Report,
    /// Array elements shown per metadata value.
    max_array: usize,
}

/// Opens `path` and reports on it: tensors matching `filter`, metadata arrays cut to
/// `max_array` elements, and with `verify` the QNAT checksums checked (invalid input
/// for other formats).
pub fn inspect(
    path: &Path,
    filter: Option<&Regex>,
    max_array: usize,
    verify: bool,
) -> Result<Inspection> {
    if let Some((src, v1)) = TensorSource::open_qlora(path)? {
        return inspect_qlora(src, &v1, filter, max_array, verify);
    }
    let src = TensorSource::open(path)?;
    let mut report = build_report(&src, filter, max_array);
    if verify {
        let Some(index) = &src.qnat else {
            crate::bail_invalid!(
                "--verify checks QNAT checksums; {} files store none",
                src.format.name()
            );
        };
        let checks = index.verify(src.files[0].data())?;
        let problems = checks.iter().filter_map(|c| c.problem()).collect();
        report.verify = Some(Verification::new(checks.len(), problems));
    }
    Ok(Inspection {
        source: src,
        report,
        max_array,
    })
}

/// A qlora-rs file: the report with each tensor's storage, and with `verify` the checks
/// of [`V1File::problems`] (there are no checksums to check).
fn inspect_qlora(
    src: TensorSource,
    v1: &V1File,
    filter: Option<&Regex>,
    max_array: usize,
    verify: bool,
) -> Result<Inspection> {
    let mut report = build_report(&src, filter, max_array);
    report.layout = Some(v1.layout.name());
    for e in &mut report.tensors {
        if let Some(t) = v1.tensors.iter().find(|t| t.name == e.name) {
            e.qlora = Some(QloraTensor {
                block_size: t.block_size,
                double_quant: t.extras.double_quant,
                exact_scales: t.scales.is_some(),
                zero_points: t.extras.zero_points,
                per_channel: t.per_channel(),
            });
        }
    }
    if verify {
        let problems = v1
            .problems(src.files[0].data())?
            .into_iter()
            .flatten()
            .collect();
        report.verify = Some(Verification::new(v1.tensors.len(), problems));
    }
    Ok(Inspection {
        source: src,
        report,
        max_array,
    })
}

impl Inspection {
    /// Invalid input when `verify` found a problem (after the report was printed).
    pub fn check_verified(&self) -> Result<()> {
        match self.report.verify.as_ref().filter(|v| !v.ok) {
            Some(v) => crate::bail_invalid!("verification failed: {}", v.problems.join("; ")),
            None => Ok(()),
        }
    }

    /// The human-readable report; `tensors` adds the tensor table.
    pub fn render_text(&self, tensors: bool) -> String {
        let mut text = render_text(&self.source, &self.report, tensors, self.max_array);
        if let Some(v) = self.report.verify.as_ref().filter(|v| v.ok) {
            text += &match self.report.layout {
                Some(_) => format!("verify: {} tensors, every value check passes (qlora-rs files have no checksums)\n", v.tensors),
                None => format!("verify: {} tensors, all checksums match\n", v.tensors),
            };
        }
        text
    }
}

fn render_text(src: &TensorSource, r: &Report, tensors: bool, max_array: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let version = r.version.map(|v| format!(" v{v}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{}: {}{version}, {} file(s), {}, {} metadata keys, {} tensors",
        escape_controls(&r.path),
        r.format,
        r.files.len(),
        human_bytes(src.file_bytes()),
        r.metadata.len(),
        src.tensors.len()
    );
    if !src.metadata.is_empty() {
        let _ = writeln!(out, "metadata:");
        let keys: Vec<_> = src
            .metadata
            .iter()
            .map(|(k, _)| escape_controls(k))
            .collect();
        let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
        for (k, (_, v)) in keys.iter().zip(&src.metadata) {
            let _ = writeln!(
                out,
                "  {k:width$}  {:6}  {}",
                v.value_type().name(),
                escape_controls(&v.to_display(max_array))
            );
        }
    }
    if tensors {
        let _ = writeln!(out, "tensors:");
        let names: Vec<_> = r.tensors.iter().map(|t| escape_controls(&t.name)).collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(4);
        for (name, t) in names.iter().zip(&r.tensors) {
            let shape = format!("{:?}", t.shape);
            let _ = writeln!(
                out,
                "  {name:width$}  {:8} {:>20}  {:>12}  {:6.3} bpw",
                t.ty,
                shape,
                human_bytes(t.bytes),
                t.bits_per_weight
            );
        }
    }
    let t = &r.totals;
    let _ = writeln!(
        out,
        "totals: {} tensors, {} elements, {}, {:.3} bits per weight",
        t.tensors,
        t.elements,
        human_bytes(t.bytes),
        t.bits_per_weight
    );
    for (name, tt) in &t.by_type {
        let _ = writeln!(
            out,
            "  {name:8} {:5} tensors  {:>14} elements  {:>12}",
            tt.tensors,
            tt.elements,
            human_bytes(tt.bytes)
        );
    }
    out
}

//! File formats: readers (and the GGUF writer) behind one [`TensorSource`] view.
//!
//! A [`TensorSource`] is an opened model — one GGUF file, one safetensors file, or a
//! sharded safetensors folder — memory-mapped, with its header parsed and validated:
//! metadata, and per tensor its name, type, shape and byte range. Opening reads only
//! headers; tensor bytes are touched when [`TensorSource::data`] is called.

pub mod atomic;
pub mod blocks;
pub mod cursor;
pub mod ggml_type;
pub mod gguf;
pub mod inspect;
pub mod qnat;
pub mod safetensors;
pub mod safetensors_writer;
pub mod weight_format;

use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use ggml_type::GgmlType;
use gguf::Value;
use memmap2::Mmap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// f32 values as little-endian bytes (how safetensors, GGUF and QNAT store them).
pub fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Container format of a [`TensorSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// llama.cpp GGUF.
    Gguf,
    /// Hugging Face safetensors (one file, or a sharded folder).
    Safetensors,
    /// qforge's native QNAT v2.
    Qnat,
}

impl Format {
    /// Lower-case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
            Format::Qnat => "qnat",
        }
    }
}

/// Element type of a tensor, in the vocabulary of the file it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// A ggml type (GGUF tensors).
    Ggml(GgmlType),
    /// A safetensors dtype.
    Safetensors(::safetensors::Dtype),
    /// A QNAT scheme (NF4, FP4, a ggml block type, or a float type).
    Qnat(qnat::Scheme),
}

impl TensorType {
    /// The type as a ggml type where one exists (F32, F16, BF16, I8..I64, F64 and all
    /// ggml block types).
    pub fn as_ggml(self) -> Option<GgmlType> {
        GgmlType::try_from(self).ok()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorType::Ggml(t) => f.write_str(t.name()),
            TensorType::Safetensors(d) => write!(f, "{d:?}"),
            TensorType::Qnat(s) => f.write_str(&s.name().to_ascii_uppercase()),
        }
    }
}

/// One tensor of a [`TensorSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Name as stored in the file.
    pub name: String,
    /// Element type.
    pub ty: TensorType,
    /// Shape in row-major order, outermost first (PyTorch order; GGUF's `ne` reversed).
    pub shape: Vec<u64>,
    /// Index into [`TensorSource::files`].
    pub file: usize,
    /// Absolute byte offset of the data in that file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bits per weight actually stored (`bytes * 8 / elements`).
    pub fn bits_per_weight(&self) -> f64 {
        match self.elements() {
            0 => 0.0,
            n => self.bytes as f64 * 8.0 / n as f64,
        }
    }

    /// ggml's `ne`: the shape innermost first.
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }
}

/// A memory-mapped input file.
pub struct SourceFile {
    /// Path as given (joined with the model folder for shards).
    pub path: PathBuf,
    map: Arc<Mmap>,
}

impl SourceFile {
    /// Opens and maps a file read-only; an empty file is invalid input.
    pub fn open(path: &Path) -> Result<SourceFile> {
        let file = File::open(path)
            .map_err(|e| invalid!(kind: Unreadable, "cannot open {}: {e}", path.display()))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail_invalid!(kind: Unreadable, "{} is not a regular file", path.display());
        }
        if meta.len() == 0 {
            bail_invalid!(kind: Truncated, "{} is empty", path.display());
        }
        // SAFETY: the map is read-only; a file changed underneath us by another process
        // can give wrong bytes but every access is bounds-checked against the map length.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("memory-mapping {}", path.display()))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
        })
    }

    /// The whole file.
    pub fn data(&self) -> &[u8] {
        &self.map
    }

    /// The memory map itself, shared: for zero-copy views (`crate::candle`) that outlive
    /// this value.
    pub fn shared_map(&self) -> Arc<Mmap> {
        Arc::clone(&self.map)
    }

    /// Asks the kernel to map the pages of `range` (bytes of the file) now, in one call
    /// (`MADV_POPULATE_READ`), so that reading them takes no page fault each. A hint:
    /// errors (a kernel older than 5.14) are ignored, and reads then fault the pages in.
    pub fn populate(&self, range: std::ops::Range<u64>) {
        let end = range.end.min(self.len());
        #[cfg(target_os = "linux")]
        if range.start < end {
            let _ = self.map.advise_range(
                memmap2::Advice::PopulateRead,
                range.start as usize,
                (end - range.start) as usize,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = end;
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Tells the kernel that `range` (bytes of the file) will not be read again, so its
    /// pages leave this process's resident set (`MADV_DONTNEED` on the read-only map:
    /// the data stays in the page cache and a later read faults it back in). Only whole
    /// 64 KiB-aligned pieces inside the range are dropped, so neighbouring bytes still to
    /// be read keep their pages whatever the page size. A hint: errors are ignored.
    pub fn release(&self, range: std::ops::Range<u64>) {
        const ALIGN: u64 = 64 << 10;
        let start = range.start.div_ceil(ALIGN) * ALIGN;
        let end = (range.end.min(self.len()) / ALIGN) * ALIGN;
        #[cfg(unix)]
        if start < end {
            // SAFETY: the map is read-only and file-backed, so dropping its pages loses no
            // data; `start..end` lies inside the map (checked above).
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start as usize,
                    (end - start) as usize,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (start, end);
    }

    /// Whether the file is empty (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// An opened model: format, metadata and tensors over memory-mapped files.
pub struct TensorSource {
    /// The path the user gave.
    pub path: PathBuf,
    /// Container format.
    pub format: Format,
    /// Format version (GGUF 2 or 3); `None` for safetensors, which has none.
    pub version: Option<u32>,
    /// Data alignment (GGUF only).
    pub alignment: Option<u64>,
    /// Metadata in file order (safetensors: sorted by key).
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order (sharded: shard by shard).
    pub tensors: Vec<TensorInfo>,
    /// The mapped files tensors point into.
    pub files: Vec<SourceFile>,
    /// The validated QNAT directory (QNAT only): sections, checksums, model info.
    pub qnat: Option<qnat::QnatIndex>,
}

impl TensorSource {
    /// Opens a GGUF file, a safetensors file, a `*.safetensors.index.json`, or a folder
    /// holding one index or one safetensors file.
    pub fn open(path: &Path) -> Result<TensorSource> {
        Self::open_with(path, gguf::Arrays::Parsed)
    }

    /// [`TensorSource::open`], a GGUF's metadata arrays kept as `arrays` says.
    pub fn open_with(path: &Path, arrays: gguf::Arrays) -> Result<TensorSource> {
        let meta = std::fs::metadata(path)
            .map_err(|e| invalid!(kind: Unreadable, "cannot open {}: {e}", path.display()))?;
        if meta.is_dir() {
            return Self::open_dir(path);
        }
        if path.to_string_lossy().ends_with(".index.json") {
            let dir = path.parent().unwrap_or(Path::new("."));
            return Self::open_index(path, dir);
        }
        let file = SourceFile::open(path)?;
        let data = file.data();
        if data.starts_with(gguf::GGUF_MAGIC) {
            let h = gguf::read_header_with(data, arrays)?;
            let tensors = h
                .tensors
                .iter()
                .map(|t| TensorInfo {
                    name: t.name.clone(),
                    ty: TensorType::Ggml(t.ty),
                    shape: t.ne.iter().rev().copied().collect(),
                    file: 0,
                    offset: h.data_offset + t.offset,
                    bytes: t.bytes,
                })
                .collect();
            return Ok(TensorSource {
                path: path.to_path_buf(),
                format: Format::Gguf,
                version: Some(h.version),
                alignment: Some(h.alignment),
                metadata: h.metadata,
                tensors,
                files: vec![file],
                qnat: None,
            });
        }
        if data.starts_with(qnat::MAGIC) {
            if let Some(layout) = qnat::qlora::detect(data) {
                bail_invalid!(
                    "{} is a qlora-rs QNAT file ({}): `inspect` and `export-native --dequantize` read it as it is; for this command migrate it to QNAT v2 with `qforge export-native {} -o NEW.qnat`",
                    path.display(),
                    layout.name(),
                    path.display()
                );
            }
            let index = qnat::parse_index(data).with_context(|| path.display().to_string())?;
            return Ok(Self::from_qnat(path, file, index));
        }
        if data.len() >= 9 && data[8] == b'{' {
            let contents = safetensors::read_shard(data, 0)?;
            return Ok(TensorSource {
                path: path.to_path_buf(),
                format: Format::Safetensors,
                version: None,
                alignment: None,
                metadata: contents.metadata,
                tensors: contents.tensors,
                files: vec![file],
                qnat: None,
            });
        }
        bail_invalid!(kind: BadMagic,
            "{}: unrecognized format (not GGUF, safetensors or QNAT; first bytes {:02x?})",
            path.display(),
            &data[..data.len().min(8)]
        )
    }

    fn open_dir(dir: &Path) -> Result<TensorSource> {
        let mut indexes = Vec::new();
        let mut singles = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".safetensors.index.json") {
                indexes.push(path);
            } else if name.ends_with(".safetensors") {
                singles.push(path);
            }
        }
        indexes.sort();
        singles.sort();
        match (indexes.as_slice(), singles.as_slice()) {
            ([index], _) => Self::open_index(index, dir),
            ([], [single]) => Self::open(single),
            ([], []) => bail_invalid!("{} holds no .safetensors file", dir.display()),
            ([], _) => bail_invalid!(
                "{} holds {} .safetensors files but no *.safetensors.index.json",
                dir.display(),
                singles.len()
            ),
            _ => bail_invalid!(
                "{} holds several *.safetensors.index.json files; name one",
                dir.display()
            ),
        }
    }

    fn open_index(index_path: &Path, dir: &Path) -> Result<TensorSource> {
        let text = std::fs::read(index_path)
            .map_err(|e| invalid!("cannot read {}: {e}", index_path.display()))?;
        let index = safetensors::read_index(&text)
            .with_context(|| format!("reading {}", index_path.display()))?;
        let mut files = Vec::new();
        let tensors = safetensors::open_sharded(dir, &index, &mut files)?;
        Ok(TensorSource {
            path: index_path.to_path_buf(),
            format: Format::Safetensors,
            version: None,
            alignment: None,
            metadata: index.metadata,
            tensors,
            files,
            qnat: None,
        })
    }

    /// Opens `path` if it is a qlora-rs QNAT file (its v1 or its version 2): the source
    /// (tensors typed NF4, each pointing at its codes, metadata `qnat.model.*` and
    /// `qlora.*`) and the parsed file; `None` for anything else.
    pub fn open_qlora(path: &Path) -> Result<Option<(TensorSource, qnat::qlora::V1File)>> {
        if path.is_dir() {
            return Ok(None);
        }
        let file = SourceFile::open(path)?;
        let Some(layout) = qnat::qlora::detect(file.data()) else {
            return Ok(None);
        };
        let v1 = qnat::qlora::read_v1(file.data()).with_context(|| path.display().to_string())?;
        let resolution = match v1.resolution {
            qnat::qlora::V1Resolution::OffsetDeltas => "offset-deltas",
            qnat::qlora::V1Resolution::Uniform => "uniform",
            qnat::qlora::V1Resolution::Flags => "flags",
        };
        let mut metadata = vec![
            ("qnat.model.name".to_string(), Value::string(&v1.model_name)),
            (
                "qnat.model.architecture".to_string(),
                Value::string(&v1.model_type),
            ),
            (
                "qnat.model.compute_dtype".to_string(),
                Value::string(&format!("{:?}", v1.compute_dtype).to_ascii_lowercase()),
            ),
            ("qlora.layout".to_string(), Value::string(layout.name())),
            ("qlora.extras_from".to_string(), Value::string(resolution)),
        ];
        if let Some(skew) = v1.offset_skew().and_then(|s| i64::try_from(s).ok()) {
            metadata.push(("qlora.offset_skew".to_string(), Value::I64(skew)));
        }
        let tensors = v1
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                ty: TensorType::Qnat(qnat::Scheme::Nf4),
                shape: t.shape.clone(),
                file: 0,
                offset: t.codes.start as u64,
                bytes: t.bytes(),
            })
            .collect();
        let src = TensorSource {
            path: path.to_path_buf(),
            format: Format::Qnat,
            version: Some(layout.version()),
            alignment: None,
            metadata,
            tensors,
            files: vec![file],
            qnat: None,
        };
        Ok(Some((src, v1)))
    }

    fn from_qnat(path: &Path, file: SourceFile, index: qnat::QnatIndex) -> TensorSource {
        let m = &index.model;
        let mut metadata = vec![
            ("qnat.model.name".to_string(), Value::string(&m.name)),
            (
                "qnat.model.architecture".to_string(),
                Value::string(&m.architecture),
            ),
            (
                "qnat.model.compute_dtype".to_string(),
                Value::string(&format!("{:?}", m.compute_dtype).to_ascii_lowercase()),
            ),
            ("qnat.tool".to_string(), Value::string(&m.tool)),
        ];
        for s in &m.source {
            metadata.push((
                format!("qnat.source.{}.sha256", s.name),
                Value::string(&s.sha256),
            ));
        }
        for (k, v) in &m.kv {
            metadata.push((k.clone(), Value::string(v)));
        }
        let base = index.header.data_offset;
        let tensors = index
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                ty: TensorType::Qnat(t.scheme),
                shape: t.shape.clone(),
                file: 0,
                offset: base + t.sections.first().map_or(0, |s| s.offset),
                bytes: t.bytes(),
            })
            .collect();
        TensorSource {
            path: path.to_path_buf(),
            format: Format::Qnat,
            version: Some(index.header.version),
            alignment: Some(u64::from(index.header.alignment)),
            metadata,
            tensors,
            files: vec![file],
            qnat: Some(index),
        }
    }

    /// The bytes of a tensor (reading them pages the data in). For QNAT, the tensor's
    /// sections from the first to the last (see [`TensorSource::qnat`] for each section).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.files[t.file].data()[t.offset as usize..(t.offset + t.bytes) as usize]
    }

    /// The mapped file holding tensor `t` and the offset of [`TensorSource::data`]`(t)` in it.
    pub fn file_range(&self, t: &TensorInfo) -> (&SourceFile, u64) {
        (&self.files[t.file], t.offset)
    }

    /// Hints that bytes `range` of tensor `t` (relative to its data) will not be read
    /// again: see [`SourceFile::release`]. Streaming writers call it as they go, so
    /// resident memory stays near a chunk, not the model.
    pub fn release(&self, t: &TensorInfo, range: std::ops::Range<u64>) {
        let end = range.end.min(t.bytes);
        self.files[t.file].release(t.offset + range.start..t.offset + end);
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Total size of the mapped files.
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().map(SourceFile::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a mapped file makes it resident; releasing a range gives the pages back.
    #[test]
    fn release_drops_read_pages_from_the_resident_set() {
        let Some(_) = crate::kernels::roofline::rss_bytes() else {
            return; // not Linux
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![7u8; 64 << 20]).unwrap();
        let f = SourceFile::open(&path).unwrap();
        let sum: u64 = f.data().iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 7 * (64 << 20) / 4096);
        let before = crate::kernels::roofline::rss_bytes().unwrap();
        // An unaligned range: only the whole 64 KiB pieces inside it go.
        f.release(1000..(64 << 20) - 1000);
        let after = crate::kernels::roofline::rss_bytes().unwrap();
        assert!(before >= after + (60 << 20), "RSS {before} -> {after}");
        // The data is still there.
        assert_eq!(f.data()[(32 << 20) + 5], 7);
        f.release(0..u64::MAX); // past the end: clamped, no error
    }
}

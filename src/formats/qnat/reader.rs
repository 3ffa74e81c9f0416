//! QNAT v2 reader: validates header and metadata completely on open, then hands out
//! section bytes as zero-copy slices of a memory map.
//!
//! Files are opened through [`TensorSource`](crate::formats::TensorSource), which maps
//! them and keeps the [`QnatIndex`]. Parsing reads the 128-byte header and the metadata
//! only; tensor bytes are read by [`QnatIndex::verify`] (all of them) or when a caller
//! touches a section slice.

use super::header::Header;
use super::layout::{MetadataJson, ModelInfo, Scheme, Section, SectionRole, TensorEntry};
use super::{align_up, hex, ALIGNMENT};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Header, model info and tensor directory of a QNAT v2 file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct QnatIndex {
    /// The header.
    pub header: Header,
    /// Model-level metadata.
    pub model: ModelInfo,
    /// Tensors in storage order.
    pub tensors: Vec<TensorEntry>,
}

/// Parses and validates a whole QNAT v2 file held in `data`: header (magic, version,
/// checksum, sizes against `data.len()`), metadata (checksum, JSON, schema), and every
/// tensor (scheme rules, counts against bytes and dtypes, shape against counts) and
/// section (inside the data section, 64-byte aligned, packed in order without overlap).
pub fn parse_index(data: &[u8]) -> Result<QnatIndex> {
    let header = Header::decode(data)?;
    // Header::decode checked metadata_offset + metadata_size == data.len().
    let meta = &data[header.metadata_offset as usize..header.file_size as usize];
    let digest: [u8; 32] = Sha256::digest(meta).into();
    if digest != header.metadata_sha256 {
        bail_invalid!(kind: Checksum, "metadata checksum mismatch: the QNAT metadata is corrupted");
    }
    let doc: MetadataJson = serde_json::from_slice(meta)
        .map_err(|e| invalid!(kind: BadEncoding, "QNAT metadata JSON: {e}"))?;
    let (model, raw) = doc.into_parts()?;
    model.validate()?;
    if raw.len() != header.tensor_count as usize {
        bail_invalid!(kind: Inconsistent,
            "the header counts {} tensors but the metadata lists {}",
            header.tensor_count,
            raw.len()
        );
    }
    let mut tensors = Vec::with_capacity(raw.len());
    let mut names = HashSet::with_capacity(raw.len());
    for t in raw {
        let t = t.into_entry()?;
        if !names.insert(t.name.clone()) {
            bail_invalid!(kind: Duplicate, "duplicate tensor name {:?}", t.name);
        }
        tensors.push(t);
    }
    check_layout(&tensors, header.data_size)?;
    Ok(QnatIndex {
        header,
        model,
        tensors,
    })
}

/// Sections must lie inside the data section, start on a 64-byte boundary, and follow
/// each other in directory order, each at the first aligned offset after the previous
/// one; the data section ends at the aligned end of the last section.
fn check_layout(tensors: &[TensorEntry], data_size: u64) -> Result<()> {
    let mut prev_end = 0u64;
    let mut next = 0u64;
    for t in tensors {
        for s in &t.sections {
            let (name, role, offset, bytes) = (&t.name, s.role, s.offset, s.bytes);
            if offset % ALIGNMENT != 0 {
                bail_invalid!(kind: BadLayout, "tensor {name:?}: section {role} at offset {offset} is not {ALIGNMENT}-byte aligned");
            }
            let end = match offset.checked_add(bytes) {
                Some(end) if end <= data_size => end,
                _ => bail_invalid!(kind: OutOfBounds,
                    "tensor {name:?}: section {role} at offset {offset} + {bytes} bytes runs past the data section ({data_size} bytes)"
                ),
            };
            if offset < prev_end {
                bail_invalid!(kind: BadLayout,
                    "tensor {name:?}: section {role} at offset {offset} overlaps the previous section (which ends at {prev_end})"
                );
            }
            if offset != next {
                bail_invalid!(kind: BadLayout,
                    "tensor {name:?}: section {role} at offset {offset} leaves a gap after the previous section (next aligned offset {next})"
                );
            }
            prev_end = end;
            next = align_up(end)
                .ok_or_else(|| invalid!(kind: Overflow, "section offsets overflow"))?;
        }
    }
    if next != data_size {
        bail_invalid!(kind: BadLayout,
            "the data section is {data_size} bytes but its sections end at {next} (padded)"
        );
    }
    Ok(())
}

/// The outcome of checking one tensor's stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorCheck {
    /// Tensor name.
    pub name: String,
    /// Bytes hashed (all sections, padding excluded).
    pub bytes: u64,
    /// SHA-256 recorded in the metadata.
    pub expected_sha256: [u8; 32],
    /// SHA-256 of the bytes in the file.
    pub actual_sha256: [u8; 32],
    /// Absolute offset of the first non-zero padding byte after one of its sections.
    pub nonzero_padding_at: Option<u64>,
}

impl TensorCheck {
    /// Whether the digest matches and the padding is zero.
    pub fn ok(&self) -> bool {
        self.expected_sha256 == self.actual_sha256 && self.nonzero_padding_at.is_none()
    }

    /// One line describing what is wrong, or `None` when the tensor is fine.
    pub fn problem(&self) -> Option<String> {
        if self.expected_sha256 != self.actual_sha256 {
            Some(format!(
                "tensor {:?}: sha256 mismatch (stored {}, computed {})",
                self.name,
                hex(&self.expected_sha256),
                hex(&self.actual_sha256)
            ))
        } else {
            self.nonzero_padding_at.map(|at| {
                format!(
                    "tensor {:?}: non-zero padding byte at offset {at}",
                    self.name
                )
            })
        }
    }

    /// Fails (invalid input) unless every check passed, naming the first failure.
    pub fn all_ok(checks: &[TensorCheck]) -> Result<()> {
        let bad: Vec<&TensorCheck> = checks.iter().filter(|c| !c.ok()).collect();
        match bad.first() {
            None => Ok(()),
            Some(first) => bail_invalid!(kind: Checksum,
                "{} of {} tensors failed verification; first: {}",
                bad.len(),
                checks.len(),
                first.problem().unwrap_or_default()
            ),
        }
    }
}

/// Per-tensor line of [`Summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    /// Tensor name.
    pub name: String,
    /// Scheme.
    pub scheme: Scheme,
    /// Row-major shape.
    pub shape: Vec<u64>,
    /// Number of elements.
    pub elements: u64,
    /// Bytes of all its sections.
    pub bytes: u64,
    /// `bytes * 8 / elements`.
    pub bits_per_weight: f64,
    /// Block size.
    pub block_size: u64,
    /// Whether the absmax values are double-quantized.
    pub double_quant: bool,
    /// Absolute offset of its first section in the file.
    pub offset: u64,
}

/// What `qforge inspect` shows of a QNAT file.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Format version (2).
    pub version: u32,
    /// Section alignment in bytes (64).
    pub alignment: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// Model-level metadata.
    pub model: ModelInfo,
    /// Tensors in storage order.
    pub tensors: Vec<TensorSummary>,
}

impl Summary {
    /// Sum of the tensors' bytes.
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.bytes))
    }

    /// Sum of the tensors' elements.
    pub fn total_elements(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.elements))
    }

    /// Overall stored bits per weight.
    pub fn bits_per_weight(&self) -> f64 {
        match self.total_elements() {
            0 => 0.0,
            n => self.total_bytes() as f64 * 8.0 / n as f64,
        }
    }
}

impl QnatIndex {
    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of section `role` of tensor `name` within `data` (the whole file).
    pub fn section<'a>(&self, data: &'a [u8], name: &str, role: SectionRole) -> Result<&'a [u8]> {
        let t = self
            .tensor(name)
            .ok_or_else(|| invalid!(kind: BadArgument, "no tensor named {name:?}"))?;
        let s = t
            .section(role)
            .ok_or_else(|| invalid!(kind: BadArgument, "tensor {name:?} has no {role} section"))?;
        self.section_data(data, s)
    }

    /// The bytes of a section of this index within `data` (the whole file).
    pub fn section_data<'a>(&self, data: &'a [u8], s: &Section) -> Result<&'a [u8]> {
        let range = self
            .header
            .data_offset
            .checked_add(s.offset)
            .and_then(|start| Some(start..start.checked_add(s.bytes)?))
            .filter(|r| r.end <= self.header.metadata_offset);
        range
            .and_then(|r| data.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?))
            .ok_or_else(|| {
                invalid!(kind: OutOfBounds,
                    "section {} at offset {} + {} bytes is outside the data section",
                    s.role,
                    s.offset,
                    s.bytes
                )
            })
    }

    /// Recomputes every tensor's SHA-256 over `data` (the whole file) and checks that all
    /// padding in the data section is zero.
    pub fn verify(&self, data: &[u8]) -> Result<Vec<TensorCheck>> {
        let base = self.header.data_offset;
        let mut checks = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let mut hasher = Sha256::new();
            let mut nonzero_padding_at = None;
            for s in &t.sections {
                let bytes = self.section_data(data, s)?;
                for chunk in bytes.chunks(1 << 20) {
                    hasher.update(chunk);
                }
                // Padding runs to the next aligned offset (within the data section).
                let end = s.offset.saturating_add(s.bytes);
                let pad_end = align_up(end).unwrap_or(end).min(self.header.data_size);
                let (from, to) = (base.saturating_add(end), base.saturating_add(pad_end));
                let pad = usize::try_from(from)
                    .ok()
                    .zip(usize::try_from(to).ok())
                    .and_then(|(a, b)| data.get(a..b))
                    .unwrap_or(&[]);
                if nonzero_padding_at.is_none() {
                    nonzero_padding_at = pad.iter().position(|&b| b != 0).map(|i| from + i as u64);
                }
            }
            checks.push(TensorCheck {
                name: t.name.clone(),
                bytes: t.bytes(),
                expected_sha256: t.sha256,
                actual_sha256: hasher.finalize().into(),
                nonzero_padding_at,
            });
        }
        Ok(checks)
    }

    /// The inspect summary.
    pub fn summary(&self) -> Summary {
        let base = self.header.data_offset;
        Summary {
            version: self.header.version,
            alignment: u64::from(self.header.alignment),
            file_size: self.header.file_size,
            model: self.model.clone(),
            tensors: self
                .tensors
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    scheme: t.scheme,
                    shape: t.shape.clone(),
                    elements: t.elements(),
                    bytes: t.bytes(),
                    bits_per_weight: t.bits_per_weight(),
                    block_size: t.block_size,
                    double_quant: t.double_quant,
                    offset: base.saturating_add(t.sections.first().map_or(0, |s| s.offset)),
                })
                .collect(),
        }
    }
}

//! Streaming QNAT v2 writer.
//!
//! Tensors arrive one after another, each as its sections in order, each section's bytes
//! in chunks of any size. Section sizes are declared up front and checked; each tensor's
//! SHA-256 is computed while its bytes pass. The metadata (which holds those digests)
//! goes after the data; the header (which holds the metadata's offset, size and digest)
//! is written last by seeking back to offset 0. Until then the first 128 bytes are zero,
//! so an interrupted file never passes for a QNAT file.
//!
//! Errors: a tensor or section that breaks the format rules is [`InvalidInput`]; calls
//! out of order (a chunk with no open section, more bytes than declared) are plain
//! errors (a bug in the caller). After any error the writer refuses further calls.
//!
//! [`InvalidInput`]: crate::error::InvalidInput

use super::header::Header;
use super::layout::{
    check_complete, check_offset, check_section, plan, MetadataJson, ModelInfo, Plan, Section,
    SectionDtype, SectionRole, TensorEntry, TensorHeader,
};
use super::{align_up, HEADER_SIZE};
use crate::bail_invalid;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};

const ZEROS: [u8; 64] = [0; 64];

/// Writes a QNAT v2 file to a seekable stream (a temporary file renamed on success).
///
/// The writer issues many small writes (padding, the header): give it a buffered stream.
pub struct QnatWriter<W: Write + Seek> {
    out: W,
    model: ModelInfo,
    /// Absolute position of the next byte.
    pos: u64,
    tensors: Vec<TensorEntry>,
    names: HashSet<String>,
    open: Option<OpenTensor>,
    failed: bool,
}

struct OpenTensor {
    header: TensorHeader,
    plan: Plan,
    sections: Vec<Section>,
    /// Bytes written into the last section so far.
    written: u64,
    hasher: Sha256,
}

impl OpenTensor {
    fn close_section(&self) -> Result<()> {
        if let Some(s) = self.sections.last() {
            if self.written != s.bytes {
                bail!(
                    "tensor {:?}: section {} got {} of its {} declared bytes",
                    self.header.name,
                    s.role,
                    self.written,
                    s.bytes
                );
            }
        }
        Ok(())
    }
}

impl<W: Write + Seek> QnatWriter<W> {
    /// Starts a file at offset 0 of `out` with a zeroed placeholder header.
    pub fn new(mut out: W, model: ModelInfo) -> Result<Self> {
        model.validate()?;
        out.seek(SeekFrom::Start(0))
            .context("seeking to the start of the QNAT output")?;
        out.write_all(&[0u8; HEADER_SIZE as usize])
            .context("writing the QNAT header placeholder")?;
        Ok(QnatWriter {
            out,
            model,
            pos: HEADER_SIZE,
            tensors: Vec::new(),
            names: HashSet::new(),
            open: None,
            failed: false,
        })
    }

    /// Runs `f`, poisoning the writer if it fails.
    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.failed {
            bail!("the QNAT writer failed earlier and cannot be used any more");
        }
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// The output stream (tests look at what an unfinished file holds).
    #[cfg(test)]
    pub(crate) fn peek_out(&self) -> &W {
        &self.out
    }

    /// Tensors finished so far.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Starts a tensor; its sections follow with [`begin_section`](Self::begin_section).
    pub fn begin_tensor(&mut self, t: TensorHeader) -> Result<()> {
        self.guard(|w| {
            if let Some(open) = &w.open {
                bail!(
                    "tensor {:?} begun while {:?} is still open",
                    t.name,
                    open.header.name
                );
            }
            let plan = plan(
                &t.name,
                &t.shape,
                t.scheme,
                t.block_size,
                t.double_quant,
                t.nested_block_size,
            )?;
            if !t.double_quant {
                check_offset(&t.name, false, t.absmax_offset)?;
            }
            if w.names.contains(&t.name) {
                bail_invalid!(kind: Duplicate, "duplicate tensor name {:?}", t.name);
            }
            if w.tensors.len() >= u32::MAX as usize {
                bail_invalid!(kind: Implausible, "too many tensors for QNAT (at most {})", u32::MAX);
            }
            w.names.insert(t.name.clone());
            w.open = Some(OpenTensor {
                header: t,
                plan,
                sections: Vec::new(),
                written: 0,
                hasher: Sha256::new(),
            });
            Ok(())
        })
    }

    /// Sets the double-quantization offset of the open tensor (known only once all its
    /// absmax values are).
    pub fn set_absmax_offset(&mut self, offset: f32) -> Result<()> {
        self.guard(|w| {
            let Some(open) = w.open.as_mut() else {
                bail!("set_absmax_offset with no open tensor");
            };
            if !open.header.double_quant {
                check_offset(&open.header.name, false, Some(offset))?;
            }
            open.header.absmax_offset = Some(offset);
            Ok(())
        })
    }

    /// Starts the next section of the open tensor: `count` elements of `dtype` in `bytes`
    /// bytes, which the following [`write`](Self::write) calls must supply exactly.
    pub fn begin_section(
        &mut self,
        role: SectionRole,
        dtype: SectionDtype,
        count: u64,
        bytes: u64,
    ) -> Result<()> {
        self.guard(|w| {
            let Some(open) = w.open.as_mut() else {
                bail!("section {role} begun with no open tensor");
            };
            open.close_section()?;
            let pad = align_up(w.pos)
                .context("QNAT output offset overflows")?
                .saturating_sub(w.pos);
            let offset = w.pos + pad - HEADER_SIZE;
            let section = Section {
                role,
                dtype,
                count,
                offset,
                bytes,
            };
            check_section(&open.header.name, &open.plan, open.sections.len(), &section)?;
            let end = offset
                .checked_add(bytes)
                .and_then(|e| e.checked_add(HEADER_SIZE));
            if end.is_none() {
                bail_invalid!(kind: Overflow,
                    "tensor {:?}: section {role} of {bytes} bytes overflows the file offset",
                    open.header.name
                );
            }
            w.out
                .write_all(&ZEROS[..pad as usize])
                .context("writing QNAT padding")?;
            w.pos += pad;
            open.sections.push(section);
            open.written = 0;
            Ok(())
        })
    }

    /// Writes the next chunk of the open section.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.guard(|w| {
            let Some(open) = w.open.as_mut() else {
                bail!("{} bytes written with no open tensor", chunk.len());
            };
            let Some(s) = open.sections.last() else {
                bail!(
                    "tensor {:?}: {} bytes written before begin_section",
                    open.header.name,
                    chunk.len()
                );
            };
            let n = chunk.len() as u64;
            if n > s.bytes - open.written {
                bail!(
                    "tensor {:?}: section {} declared {} bytes, {} written, a chunk of {n} overflows it",
                    open.header.name,
                    s.role,
                    s.bytes,
                    open.written
                );
            }
            w.out
                .write_all(chunk)
                .context("writing QNAT tensor data")?;
            open.hasher.update(chunk);
            open.written += n;
            w.pos += n;
            Ok(())
        })
    }

    /// Convenience: [`begin_section`](Self::begin_section) with `bytes = data.len()`,
    /// then [`write`](Self::write) of all of `data`.
    pub fn write_section(
        &mut self,
        role: SectionRole,
        dtype: SectionDtype,
        count: u64,
        data: &[u8],
    ) -> Result<()> {
        self.begin_section(role, dtype, count, data.len() as u64)?;
        self.write(data)
    }

    /// Finishes the open tensor: every section complete, the absmax offset set when
    /// double-quantized.
    pub fn end_tensor(&mut self) -> Result<()> {
        self.guard(|w| {
            let Some(open) = w.open.take() else {
                bail!("end_tensor with no open tensor");
            };
            open.close_section()?;
            let h = open.header;
            check_complete(&h.name, &open.plan, open.sections.len())?;
            check_offset(&h.name, h.double_quant, h.absmax_offset)?;
            w.tensors.push(TensorEntry {
                name: h.name,
                shape: h.shape,
                scheme: h.scheme,
                block_size: h.block_size,
                double_quant: h.double_quant,
                nested_block_size: h.nested_block_size,
                absmax_offset: h.absmax_offset,
                sections: open.sections,
                sha256: open.hasher.finalize().into(),
            });
            Ok(())
        })
    }

    /// Pads the data section, writes the metadata, then the header at offset 0, and
    /// returns the stream positioned at the end of the file.
    pub fn finish(mut self) -> Result<W> {
        self.guard(|w| {
            if let Some(open) = &w.open {
                bail!(
                    "finish with tensor {:?} still open; call end_tensor",
                    open.header.name
                );
            }
            let end = align_up(w.pos).context("QNAT output offset overflows")?;
            w.out
                .write_all(&ZEROS[..(end - w.pos) as usize])
                .context("writing QNAT padding")?;
            w.pos = end;
            let json = serde_json::to_vec(&MetadataJson::new(&w.model, &w.tensors))
                .context("serializing the QNAT metadata")?;
            w.out
                .write_all(&json)
                .context("writing the QNAT metadata")?;
            let header = Header::new(
                end - HEADER_SIZE,
                json.len() as u64,
                w.tensors.len() as u32,
                Sha256::digest(&json).into(),
            )
            .context("QNAT file size overflows")?;
            w.out
                .seek(SeekFrom::Start(0))
                .context("seeking back to the QNAT header")?;
            w.out
                .write_all(&header.encode())
                .context("writing the QNAT header")?;
            w.out
                .seek(SeekFrom::Start(header.file_size))
                .context("seeking to the end of the QNAT output")?;
            w.out.flush().context("flushing the QNAT output")?;
            Ok(())
        })?;
        Ok(self.out)
    }
}

//! Streaming GGUF v3 writer.
//!
//! The layout (header bytes, every tensor's offset, the total size) is computed from
//! names, shapes and types alone ([`GgufLayout::new`]); tensor data is then streamed in
//! order with [`GgufStream`], so no tensor has to be held in memory longer than it takes
//! to write it. Padding follows llama.cpp: the data section starts at an aligned offset
//! and every tensor is zero-padded to the alignment.

use super::value::{write_string_bytes, Value};
use super::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::formats::ggml_type::GgmlType;
use anyhow::{bail, ensure, Result};
use std::io::Write;

/// A tensor to be written: name, ggml dims (innermost first) and type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// ggml dimensions `ne`, innermost first.
    pub ne: Vec<u64>,
    /// Output type.
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Bytes of tensor data, or an error when the row is not a whole number of blocks.
    pub fn bytes(&self) -> Result<u64> {
        let row = self.ty.row_bytes(self.ne[0]).ok_or_else(|| {
            anyhow::anyhow!(
                "tensor {:?}: row length {} is not a multiple of the {} block size {}",
                self.name,
                self.ne[0],
                self.ty,
                self.ty.block_size()
            )
        })?;
        let rows: u64 = self.ne[1..].iter().product();
        Ok(row * rows)
    }
}

/// The full byte layout of a GGUF v3 file, known before any tensor data is produced.
#[derive(Debug, Clone)]
pub struct GgufLayout {
    /// Serialized header (magic through tensor infos), without the padding after it.
    pub header: Vec<u8>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Per tensor: offset relative to the data section and size in bytes.
    pub tensors: Vec<(u64, u64)>,
    /// Alignment in bytes.
    pub alignment: u64,
    /// Total file size.
    pub file_size: u64,
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

impl GgufLayout {
    /// Lays out a file with `metadata` (written in the given order) and `tensors`.
    pub fn new(metadata: &[(String, Value)], tensors: &[TensorSpec]) -> Result<GgufLayout> {
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => GGUF_DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some(_) => bail!("general.alignment must be a u32 power of two"),
        };
        // Room for the whole header in one allocation (a tokenizer's arrays make it MBs):
        // exact for raw arrays and tensor infos, a guess for other values.
        let guess = |v: &Value| match v {
            Value::RawArray(a) => a.payload().len(),
            Value::String(s) => 8 + s.len(),
            _ => 16,
        };
        let capacity = 24
            + metadata
                .iter()
                .map(|(k, v)| 12 + k.len() + guess(v))
                .sum::<usize>()
            + tensors
                .iter()
                .map(|t| 24 + t.name.len() + 8 * t.ne.len())
                .sum::<usize>();
        let mut header = Vec::with_capacity(capacity);
        header.extend_from_slice(GGUF_MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            write_string_bytes(&mut header, key.as_bytes())?;
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            value.write_payload(&mut header)?;
        }
        let mut placed = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            ensure!(
                !t.ne.is_empty() && t.ne.len() <= 4,
                "tensor {:?}: {} dimensions",
                t.name,
                t.ne.len()
            );
            let bytes = t.bytes()?;
            write_string_bytes(&mut header, t.name.as_bytes())?;
            header.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            placed.push((offset, bytes));
            offset = align(offset + bytes, alignment);
        }
        let data_offset = align(header.len() as u64, alignment);
        Ok(GgufLayout {
            header,
            data_offset,
            file_size: data_offset + offset,
            tensors: placed,
            alignment,
        })
    }
}

/// Writes a [`GgufLayout`] to a stream: the header, then each tensor's data in order.
pub struct GgufStream<'a, W: Write> {
    out: W,
    layout: &'a GgufLayout,
    next: usize,
    written: u64,
}

impl<'a, W: Write> GgufStream<'a, W> {
    /// Writes the header and its padding.
    pub fn start(mut out: W, layout: &'a GgufLayout) -> Result<Self> {
        out.write_all(&layout.header)?;
        let pad = layout.data_offset - layout.header.len() as u64;
        write_zeros(&mut out, pad)?;
        Ok(GgufStream {
            out,
            layout,
            next: 0,
            written: 0,
        })
    }

    /// Appends a chunk of the current tensor's data; a tensor may come in several chunks.
    /// Padding is added when the tensor is complete.
    pub fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(&(_, bytes)) = self.layout.tensors.get(self.next) else {
            bail!("more tensor data than the layout has tensors");
        };
        ensure!(
            self.written + chunk.len() as u64 <= bytes,
            "tensor #{} gets more than its {bytes} bytes",
            self.next
        );
        self.out.write_all(chunk)?;
        self.advance(chunk.len() as u64)
    }

    /// The index of the tensor whose data comes next.
    pub fn next_tensor(&self) -> usize {
        self.next
    }

    /// Appends the next `n` tensors whole, with the padding between them, as one span
    /// that `copy(out, len)` writes itself (`len`: from the first tensor's start to the
    /// last one's end). The padding after the last tensor is added here.
    pub fn copy_tensors(
        &mut self,
        n: usize,
        copy: impl FnOnce(&mut W, u64) -> std::io::Result<()>,
    ) -> Result<()> {
        ensure!(
            self.written == 0,
            "tensor #{} is only partly written",
            self.next
        );
        let (first, last) = (self.next, self.next + n);
        ensure!(
            n > 0 && last <= self.layout.tensors.len(),
            "{n} tensors from #{first}: more than the layout has"
        );
        let (start, _) = self.layout.tensors[first];
        let (end_at, end_bytes) = self.layout.tensors[last - 1];
        copy(&mut self.out, end_at + end_bytes - start)?;
        self.next = last - 1;
        self.advance(end_bytes)
    }

    fn advance(&mut self, len: u64) -> Result<()> {
        self.written += len;
        if self.written == self.layout.tensors[self.next].1 {
            let bytes = self.written;
            write_zeros(&mut self.out, align(bytes, self.layout.alignment) - bytes)?;
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks every tensor was written in full and returns the writer.
    pub fn finish(self) -> Result<W> {
        ensure!(
            self.next == self.layout.tensors.len() && self.written == 0,
            "GGUF stream ended after {} of {} tensors",
            self.next,
            self.layout.tensors.len()
        );
        Ok(self.out)
    }
}

fn write_zeros(out: &mut impl Write, n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 64] = [0; 64];
    let mut left = n;
    while left > 0 {
        let k = left.min(64) as usize;
        out.write_all(&ZEROS[..k])?;
        left -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{read_header, read_header_with, Arrays, ValueType};
    use super::*;

    #[test]
    fn written_file_reads_back_identically() {
        let metadata = vec![
            ("general.architecture".to_string(), Value::string("llama")),
            ("general.alignment".to_string(), Value::U32(64)),
            ("x.count".to_string(), Value::U64(3)),
            (
                "x.tokens".to_string(),
                Value::Array(
                    ValueType::String,
                    vec![Value::string("<s>"), Value::string("ab")],
                ),
            ),
        ];
        let tensors = vec![
            TensorSpec {
                name: "a".into(),
                ne: vec![3],
                ty: GgmlType::F32,
            },
            TensorSpec {
                name: "b".into(),
                ne: vec![256, 2],
                ty: GgmlType::Q4_K,
            },
        ];
        let layout = GgufLayout::new(&metadata, &tensors).unwrap();
        let mut s = GgufStream::start(Vec::new(), &layout).unwrap();
        s.write_data(&[1u8; 12]).unwrap();
        s.write_data(&[2u8; 144]).unwrap();
        s.write_data(&[3u8; 144]).unwrap();
        let file = s.finish().unwrap();
        assert_eq!(file.len() as u64, layout.file_size);
        let h = read_header(&file).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.alignment, 64);
        assert_eq!(h.metadata, metadata);
        assert_eq!(h.tensors[1].offset, 64);
        assert_eq!(h.tensors[1].bytes, 288);
        assert_eq!(h.data_offset % 64, 0);
        let b = &file[(h.data_offset + 64) as usize..][..288];
        assert!(b[..144].iter().all(|&x| x == 2) && b[144..].iter().all(|&x| x == 3));
        // Read with raw arrays and laid out again: the same header bytes.
        let raw = read_header_with(&file, Arrays::Raw).unwrap();
        assert!(matches!(raw.metadata[3].1, Value::RawArray(_)));
        assert_eq!(raw.metadata[..3], metadata[..3]);
        let again = GgufLayout::new(&raw.metadata, &tensors).unwrap();
        assert_eq!(again.header, layout.header);
    }

    #[test]
    fn copied_span_equals_tensor_by_tensor_writes() {
        let spec = |name: &str, n| TensorSpec {
            name: name.into(),
            ne: vec![n],
            ty: GgmlType::F32,
        };
        let tensors = vec![spec("a", 3), spec("b", 5), spec("c", 2), spec("d", 8)];
        let layout = GgufLayout::new(&[], &tensors).unwrap();
        let data = |i: usize| vec![i as u8 + 1; tensors[i].bytes().unwrap() as usize];
        let mut one = GgufStream::start(Vec::new(), &layout).unwrap();
        for i in 0..4 {
            one.write_data(&data(i)).unwrap();
        }
        let one = one.finish().unwrap();
        // b and c in one span: their bytes and the zero padding between them.
        let mut span = GgufStream::start(Vec::new(), &layout).unwrap();
        span.write_data(&data(0)).unwrap();
        assert_eq!(span.next_tensor(), 1);
        span.copy_tensors(2, |out, len| {
            let (b, c) = (layout.tensors[1], layout.tensors[2]);
            assert_eq!(len, c.0 + c.1 - b.0);
            out.extend(data(1));
            out.extend(vec![0; (c.0 - b.0 - b.1) as usize]);
            out.extend(data(2));
            Ok(())
        })
        .unwrap();
        assert_eq!(span.next_tensor(), 3);
        assert!(span.copy_tensors(2, |_, _| Ok(())).is_err());
        span.write_data(&data(3)[..4]).unwrap();
        assert!(span.copy_tensors(1, |_, _| Ok(())).is_err());
        span.write_data(&data(3)[4..]).unwrap();
        assert_eq!(span.finish().unwrap(), one);
    }

    #[test]
    fn stream_rejects_excess_and_missing_data() {
        let tensors = vec![TensorSpec {
            name: "a".into(),
            ne: vec![2],
            ty: GgmlType::F32,
        }];
        let layout = GgufLayout::new(&[], &tensors).unwrap();
        let mut s = GgufStream::start(Vec::new(), &layout).unwrap();
        assert!(s.write_data(&[0; 9]).is_err());
        s.write_data(&[0; 4]).unwrap();
        assert!(s.finish().is_err());
        let bad = TensorSpec {
            name: "q".into(),
            ne: vec![100],
            ty: GgmlType::Q4_K,
        };
        assert!(GgufLayout::new(&[], &[bad]).is_err());
    }
}

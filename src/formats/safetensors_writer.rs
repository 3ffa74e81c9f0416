//! Streaming safetensors writer.
//!
//! Tensors are appended one after another, each declared with its size before its
//! bytes arrive. The JSON header, which holds every offset, goes at the start of the
//! file: space for it is reserved up front from a worst-case estimate (every number at
//! its widest), and the real header, padded with spaces as the format allows, is
//! written over the reservation by [`SafetensorsWriter::finish`].

use anyhow::{bail, ensure, Result};
use serde_json::{json, Map, Value as Json};
use std::io::{Seek, SeekFrom, Write};

/// A tensor declared to the writer: name, safetensors dtype name, shape.
#[derive(Debug, Clone)]
pub struct StTensor {
    /// Tensor name.
    pub name: String,
    /// Dtype as safetensors spells it (`U8`, `F32`, `BF16`, ...).
    pub dtype: &'static str,
    /// Row-major shape.
    pub shape: Vec<u64>,
}

/// Writes a safetensors file tensor by tensor.
pub struct SafetensorsWriter<W: Write + Seek> {
    out: W,
    reserved: u64,
    metadata: Map<String, Json>,
    entries: Vec<(StTensor, u64, u64)>,
    pos: u64,
    pending: u64,
}

/// Header bytes needed in the worst case for `names_and_ranks` (name length, rank) and
/// the given metadata, with every number at 20 digits.
pub fn header_estimate(names_and_ranks: &[(usize, usize)], metadata: &Map<String, Json>) -> u64 {
    let per_tensor: usize = names_and_ranks
        .iter()
        .map(|(name, rank)| name * 2 + 64 + 21 * (rank + 2))
        .sum();
    let meta = Json::Object(metadata.clone()).to_string().len();
    (per_tensor + meta + 64).next_multiple_of(8) as u64
}

impl<W: Write + Seek> SafetensorsWriter<W> {
    /// Starts a file whose header will take at most `reserved` bytes.
    pub fn new(mut out: W, reserved: u64, metadata: Map<String, Json>) -> Result<Self> {
        out.write_all(&reserved.to_le_bytes())?;
        out.write_all(&vec![b' '; reserved as usize])?;
        Ok(SafetensorsWriter {
            out,
            reserved,
            metadata,
            entries: Vec::new(),
            pos: 0,
            pending: 0,
        })
    }

    /// Declares the next tensor and its byte size.
    pub fn begin(&mut self, t: StTensor, bytes: u64) -> Result<()> {
        ensure!(self.pending == 0, "previous tensor is incomplete");
        self.entries.push((t, self.pos, self.pos + bytes));
        self.pending = bytes;
        Ok(())
    }

    /// Appends bytes of the current tensor.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        ensure!(
            chunk.len() as u64 <= self.pending,
            "tensor data exceeds its declared size"
        );
        self.out.write_all(chunk)?;
        self.pending -= chunk.len() as u64;
        self.pos += chunk.len() as u64;
        Ok(())
    }

    /// Declares and writes a whole tensor at once.
    pub fn tensor(&mut self, t: StTensor, data: &[u8]) -> Result<()> {
        self.begin(t, data.len() as u64)?;
        self.write(data)
    }

    /// Writes the header over the reservation and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        ensure!(self.pending == 0, "last tensor is incomplete");
        let mut header = Map::new();
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), Json::Object(self.metadata.clone()));
        }
        for (t, start, end) in &self.entries {
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, end]}),
            );
        }
        let text = Json::Object(header).to_string();
        if text.len() as u64 > self.reserved {
            bail!(
                "safetensors header of {} bytes exceeds the {} reserved",
                text.len(),
                self.reserved
            );
        }
        self.out.seek(SeekFrom::Start(8))?;
        self.out.write_all(text.as_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::safetensors::read_shard;
    use std::io::Cursor;

    #[test]
    fn written_file_is_read_back_by_the_safetensors_crate() {
        let tensors = [("a", 2usize), ("bb.weight", 1)];
        let est = header_estimate(
            &tensors
                .iter()
                .map(|(n, r)| (n.len(), *r))
                .collect::<Vec<_>>(),
            &Map::new(),
        );
        let mut w = SafetensorsWriter::new(Cursor::new(Vec::new()), est, Map::new()).unwrap();
        let a = StTensor {
            name: "a".into(),
            dtype: "F32",
            shape: vec![2, 2],
        };
        w.begin(a, 16).unwrap();
        w.write(&[0u8; 10]).unwrap();
        w.write(&[1u8; 6]).unwrap();
        let b = StTensor {
            name: "bb.weight".into(),
            dtype: "U8",
            shape: vec![3],
        };
        w.tensor(b, &[7, 8, 9]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let s = read_shard(&bytes, 0).unwrap();
        assert_eq!(s.tensors.len(), 2);
        assert_eq!(s.tensors[1].name, "bb.weight");
        assert_eq!(&bytes[s.tensors[1].offset as usize..], &[7, 8, 9]);
    }

    #[test]
    fn size_mismatches_are_errors() {
        let mut w = SafetensorsWriter::new(Cursor::new(Vec::new()), 256, Map::new()).unwrap();
        w.begin(
            StTensor {
                name: "a".into(),
                dtype: "U8",
                shape: vec![2],
            },
            2,
        )
        .unwrap();
        assert!(w.write(&[0; 3]).is_err());
        assert!(w.finish().is_err());
    }
}

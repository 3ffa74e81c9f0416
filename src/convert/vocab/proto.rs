//! A small, bounds-checked reader for SentencePiece's `tokenizer.model` (a protobuf
//! `ModelProto`): the pieces (text, score, type), the trainer's model type and the
//! normalizer flags. Unknown fields are skipped; any malformed byte is an exit-2 error.
//!
//! Why our own: the fields needed are a handful, and a protobuf crate would bring code
//! generation for a schema we read four fields of.

use anyhow::Result;

/// The largest tokenizer.model read (real ones stay under 10 MB).
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// A piece's type (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// `NORMAL = 1` (the default).
    Normal,
    /// `UNKNOWN = 2`.
    Unknown,
    /// `CONTROL = 3`.
    Control,
    /// `USER_DEFINED = 4`.
    UserDefined,
    /// `UNUSED = 5`.
    Unused,
    /// `BYTE = 6`.
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Result<PieceType> {
        Ok(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => crate::bail_invalid!(kind: UnknownType, "tokenizer.model: unknown piece type {v}"),
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text (UTF-8 as SentencePiece requires).
    pub piece: String,
    /// Its score (log probability for unigram, rank for BPE).
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

/// The parts of a `ModelProto` convert (or llama.cpp) looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProto {
    /// The vocabulary, in id order.
    pub pieces: Vec<Piece>,
    /// `trainer_spec.model_type`: 1 unigram (default), 2 BPE, 3 word, 4 char.
    pub model_type: u64,
    /// `normalizer_spec.add_dummy_prefix` (default true).
    pub add_dummy_prefix: bool,
    /// `normalizer_spec.remove_extra_whitespaces` (default true).
    pub remove_extra_whitespaces: bool,
    /// `normalizer_spec.precompiled_charsmap` (default empty).
    pub precompiled_charsmap: Vec<u8>,
}

/// Parses a serialized `ModelProto`.
pub fn parse_model(bytes: &[u8]) -> Result<ModelProto> {
    let mut model = ModelProto {
        pieces: Vec::new(),
        model_type: 1,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        precompiled_charsmap: Vec::new(),
    };
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Field::Bytes(b)) => model.pieces.push(parse_piece(b)?),
            (2, Field::Bytes(b)) => {
                let mut t = Reader::new(b);
                while let Some((f, v)) = t.field()? {
                    if let (3, Field::Varint(x)) = (f, v) {
                        model.model_type = x;
                    }
                }
            }
            (3, Field::Bytes(b)) => {
                let mut n = Reader::new(b);
                while let Some((f, v)) = n.field()? {
                    match (f, v) {
                        (2, Field::Bytes(map)) => model.precompiled_charsmap = map.to_vec(),
                        (3, Field::Varint(x)) => model.add_dummy_prefix = x != 0,
                        (4, Field::Varint(x)) => model.remove_extra_whitespaces = x != 0,
                        _ => {}
                    }
                }
            }
            (1..=3, _) => {
                crate::bail_invalid!(kind: BadLayout, "tokenizer.model: field {field} has the wrong wire type")
            }
            _ => {}
        }
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8]) -> Result<Piece> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Field::Bytes(b)) => piece.piece = std::str::from_utf8(b)
                .map_err(
                    |_| crate::invalid!(kind: BadEncoding, "tokenizer.model: a piece is not UTF-8"),
                )?
                .to_string(),
            (2, Field::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Field::Varint(v)) => piece.kind = PieceType::from_proto(v)?,
            (1..=3, _) => {
                crate::bail_invalid!(kind: BadLayout, "tokenizer.model: piece field {field} has the wrong wire type")
            }
            _ => {}
        }
    }
    Ok(piece)
}

/// One field's value by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                crate::bail_invalid!(kind: Truncated, "tokenizer.model: truncated varint at byte {}", self.pos);
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        crate::bail_invalid!(kind: BadEncoding,
            "tokenizer.model: varint longer than 10 bytes at byte {}",
            self.pos
        )
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            crate::bail_invalid!(kind: Truncated,
                "tokenizer.model: a field of {n} bytes runs past the end at byte {}",
                self.pos
            );
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next (field number, value), `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            crate::bail_invalid!(kind: BadLayout, "tokenizer.model: field number 0 at byte {}", self.pos);
        }
        let value = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let len = self.varint()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => crate::bail_invalid!(kind: BadLayout,
                "tokenizer.model: unsupported wire type {wire} at byte {}",
                self.pos
            ),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// A serialized piece: text, score, optional type.
    pub(crate) fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        if let Some(k) = kind {
            varint(3 << 3, &mut p);
            varint(k, &mut p);
        }
        p
    }

    /// A serialized ModelProto from pieces, with a trainer spec and a normalizer spec.
    pub(crate) fn model(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut m = Vec::new();
        for p in pieces {
            bytes_field(1, p, &mut m);
        }
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        bytes_field(2, &trainer, &mut m);
        let mut norm = Vec::new();
        varint(3 << 3, &mut norm);
        varint(0, &mut norm);
        bytes_field(3, &norm, &mut m);
        // An unknown fixed64 field and an unknown varint are skipped.
        varint(9 << 3 | 1, &mut m);
        m.extend_from_slice(&[0; 8]);
        varint(10 << 3, &mut m);
        varint(300, &mut m);
        m
    }

    #[test]
    fn parses_pieces_and_specs() {
        let bytes = model(&[piece("<unk>", 0.0, Some(2)), piece("\u{2581}a", -1.5, None)]);
        let m = parse_model(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 2);
        assert_eq!(m.pieces[0].kind, PieceType::Unknown);
        assert_eq!(
            m.pieces[1],
            Piece {
                piece: "\u{2581}a".into(),
                score: -1.5,
                kind: PieceType::Normal
            }
        );
        assert_eq!(m.model_type, 2);
        assert!(!m.add_dummy_prefix);
        assert!(m.remove_extra_whitespaces);
    }

    #[test]
    fn reads_a_real_sentencepiece_model() {
        // fixtures/tokenizers/spm-bpe.model, as sentencepiece's processor reads it.
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/tokenizers/spm-bpe.model"
        ))
        .unwrap();
        let m = parse_model(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 400);
        assert_eq!(m.model_type, 2);
        let kinds: Vec<_> = m.pieces[..8]
            .iter()
            .map(|p| (p.piece.as_str(), p.kind))
            .collect();
        use PieceType::*;
        assert_eq!(
            kinds,
            [
                ("<unk>", Unknown),
                ("<s>", Control),
                ("</s>", Control),
                ("<pad>", Control),
                ("<ctrl>", Control),
                ("<start_of_turn>", UserDefined),
                ("<end_of_turn>", UserDefined),
                ("<0x00>", Byte),
            ]
        );
        assert_eq!(m.pieces[262].piece, "<0xFF>");
        assert_eq!(m.pieces[263].piece, "\u{2581}|");
        assert_eq!(m.pieces[263].score.to_bits(), (-0.0f32).to_bits());
        assert_eq!(
            (m.pieces[300].piece.as_str(), m.pieces[300].score),
            ("t", -37.0)
        );
        assert_eq!(
            (m.pieces[399].piece.as_str(), m.pieces[399].score),
            ("\u{3a3}", -136.0)
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let good = model(&[piece("a", 0.0, None)]);
        for cut in 1..good.len() {
            // Every strict prefix is either a valid shorter message or an error, never a panic.
            let _ = parse_model(&good[..cut]);
        }
        use crate::error::{invalid_kind, InvalidKind::*};
        for (bad, kind) in [
            (&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..], Truncated), // length past the end
            (&[0x0a][..], Truncated),                               // no length
            (&[0x0b][..], BadLayout),                               // wire type 3 (groups)
            (&[0x80; 11][..], BadEncoding),                         // endless varint
            (&[0x00, 0x00][..], BadLayout),                         // field 0
            (&[0x08, 0x01][..], BadLayout),                         // pieces as a varint
            (&[0x0a, 0x02, 0x0a, 0x01][..], Truncated),             // piece text past its message
            (&[0x0a, 0x03, 0x0a, 0x01, 0xff][..], BadEncoding),     // piece not UTF-8
        ] {
            let err = parse_model(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2, "{bad:?}");
            assert_eq!(invalid_kind(&err), Some(kind), "{bad:?}: {err:#}");
        }
        let bad_type = model(&[piece("a", 0.0, Some(9))]);
        assert_eq!(
            invalid_kind(&parse_model(&bad_type).unwrap_err()),
            Some(UnknownType)
        );
    }
}

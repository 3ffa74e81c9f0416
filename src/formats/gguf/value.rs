//! GGUF metadata values: the 13 value types of the GGUF spec, read and written.

use crate::formats::cursor::Cursor;
use crate::invalid;
use anyhow::Result;
use serde_json::{json, Value as Json};
use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

/// GGUF metadata value type ids (`gguf_type` in gguf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// `uint8`
    U8 = 0,
    /// `int8`
    I8 = 1,
    /// `uint16`
    U16 = 2,
    /// `int16`
    I16 = 3,
    /// `uint32`
    U32 = 4,
    /// `int32`
    I32 = 5,
    /// `float32`
    F32 = 6,
    /// `bool` (one byte, 0 or 1)
    Bool = 7,
    /// `string` (u64 length + bytes)
    String = 8,
    /// `array` (element type, u64 count, elements)
    Array = 9,
    /// `uint64`
    U64 = 10,
    /// `int64`
    I64 = 11,
    /// `float64`
    F64 = 12,
}

impl ValueType {
    /// The type for a GGUF type id.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Lower-case name used in `inspect --json` (`u32`, `string`, `array`).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type occupies in a file.
    fn min_size(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    /// The size of every value of this type when all have one size (not bool, whose
    /// bytes must each be checked, nor strings and arrays).
    fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            Bool | String | Array => None,
            t => Some(t.min_size()),
        }
    }
}

/// One metadata value. Strings keep their exact bytes so a file is rewritten unchanged
/// even where a writer stored invalid UTF-8.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// `string`, as stored
    String(Vec<u8>),
    /// `array` of one element type
    Array(ValueType, Vec<Value>),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
    /// An `array` kept as its encoded bytes (validated, not parsed): what a reader that
    /// only passes arrays through produces ([`Value::read_raw_array`]). Written back byte
    /// for byte; never equal to the parsed [`Value::Array`] of the same bytes.
    RawArray(RawArray),
}

/// A GGUF array as stored: the payload (element type id, count, elements) of an array
/// that [`Value::read_raw_array`] validated. Cloning it shares the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray {
    elem: ValueType,
    len: u64,
    payload: Arc<[u8]>,
}

impl RawArray {
    /// The element type.
    pub fn elem(&self) -> ValueType {
        self.elem
    }

    /// The number of elements.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload bytes, as [`Value::write_payload`] writes them.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The parsed [`Value::Array`].
    pub fn parse(&self) -> Result<Value> {
        Value::read(&mut Cursor::new(&self.payload), ValueType::Array, 0)
    }
}

impl Value {
    /// A string value.
    pub fn string(s: &str) -> Value {
        Value::String(s.as_bytes().to_vec())
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) | Value::RawArray(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The string, if this is one (invalid UTF-8 shown with replacement characters).
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::String(b) => Some(String::from_utf8_lossy(b)),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Reads a value of type `ty` at the cursor.
    pub fn read(c: &mut Cursor<'_>, ty: ValueType, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(c.u8("u8 value")?),
            ValueType::I8 => Value::I8(c.u8("i8 value")? as i8),
            ValueType::U16 => Value::U16(c.u16("u16 value")?),
            ValueType::I16 => Value::I16(c.u16("i16 value")? as i16),
            ValueType::U32 => Value::U32(c.u32("u32 value")?),
            ValueType::I32 => Value::I32(c.u32("i32 value")? as i32),
            ValueType::F32 => Value::F32(c.f32("f32 value")?),
            ValueType::U64 => Value::U64(c.u64("u64 value")?),
            ValueType::I64 => Value::I64(c.u64("i64 value")? as i64),
            ValueType::F64 => Value::F64(c.f64("f64 value")?),
            ValueType::Bool => Value::Bool(read_bool(c)?),
            ValueType::String => Value::String(read_string_bytes(c, "string value")?.to_vec()),
            ValueType::Array => {
                let (elem, count) = read_array_header(c, depth)?;
                let mut values = Vec::with_capacity(c.capacity_for(count, elem.min_size()));
                for _ in 0..count {
                    values.push(Value::read(c, elem, depth + 1)?);
                }
                Value::Array(elem, values)
            }
        })
    }

    /// Reads an array at the cursor as a [`Value::RawArray`]: checked as [`Value::read`]
    /// checks it (the same errors), but its elements are not parsed, so a tokenizer's
    /// hundred thousand strings cost one walk over their lengths and one copy.
    pub fn read_raw_array(c: &mut Cursor<'_>, depth: u32) -> Result<Value> {
        let start = c.position();
        let (elem, len) = skip_array(c, depth)?;
        Ok(Value::RawArray(RawArray {
            elem,
            len,
            payload: c.since(start).into(),
        }))
    }

    /// Writes the value's payload (without its type id) in GGUF v3 encoding.
    pub fn write_payload(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Value::U8(v) => w.write_all(&[*v]),
            Value::I8(v) => w.write_all(&v.to_le_bytes()),
            Value::U16(v) => w.write_all(&v.to_le_bytes()),
            Value::I16(v) => w.write_all(&v.to_le_bytes()),
            Value::U32(v) => w.write_all(&v.to_le_bytes()),
            Value::I32(v) => w.write_all(&v.to_le_bytes()),
            Value::F32(v) => w.write_all(&v.to_le_bytes()),
            Value::Bool(v) => w.write_all(&[*v as u8]),
            Value::String(b) => write_string_bytes(w, b),
            Value::Array(elem, values) => {
                w.write_all(&(*elem as u32).to_le_bytes())?;
                w.write_all(&(values.len() as u64).to_le_bytes())?;
                values.iter().try_for_each(|v| v.write_payload(w))
            }
            Value::U64(v) => w.write_all(&v.to_le_bytes()),
            Value::I64(v) => w.write_all(&v.to_le_bytes()),
            Value::F64(v) => w.write_all(&v.to_le_bytes()),
            Value::RawArray(a) => w.write_all(&a.payload),
        }
    }

    /// JSON rendering for `inspect --json`; arrays are cut after `max_array` elements.
    pub fn to_json(&self, max_array: usize) -> Json {
        match self {
            Value::U8(v) => json!(v),
            Value::I8(v) => json!(v),
            Value::U16(v) => json!(v),
            Value::I16(v) => json!(v),
            Value::U32(v) => json!(v),
            Value::I32(v) => json!(v),
            Value::F32(v) => finite_or_string(*v as f64),
            Value::Bool(v) => json!(v),
            Value::String(b) => json!(String::from_utf8_lossy(b)),
            Value::Array(_, values) => Json::Array(
                values
                    .iter()
                    .take(max_array)
                    .map(|v| v.to_json(max_array))
                    .collect(),
            ),
            Value::U64(v) => json!(v),
            Value::I64(v) => json!(v),
            Value::F64(v) => finite_or_string(*v),
            Value::RawArray(a) => parsed_or_error(a).to_json(max_array),
        }
    }

    /// Short human rendering for `inspect` text output.
    pub fn to_display(&self, max_array: usize) -> String {
        match self {
            Value::String(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Value::Array(elem, values) => {
                let shown: Vec<String> = values
                    .iter()
                    .take(max_array)
                    .map(|v| v.to_display(max_array))
                    .collect();
                let more = if values.len() > max_array {
                    ", ..."
                } else {
                    ""
                };
                format!(
                    "[{}{}] ({} x {})",
                    shown.join(", "),
                    more,
                    values.len(),
                    elem.name()
                )
            }
            Value::RawArray(a) => parsed_or_error(a).to_display(max_array),
            other => other.to_json(max_array).to_string(),
        }
    }
}

/// A raw array parsed for display; its bytes were checked when it was read, so the error
/// string stands for a case that does not occur.
fn parsed_or_error(a: &RawArray) -> Value {
    a.parse()
        .unwrap_or_else(|e| Value::string(&format!("<unreadable array: {e}>")))
}

/// Reads a bool byte (0 or 1; anything else is invalid).
fn read_bool(c: &mut Cursor<'_>) -> Result<bool> {
    match c.u8("bool value")? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(invalid!(
            "invalid bool byte {b} at offset {}",
            c.position() - 1
        )),
    }
}

/// Reads an array's element type and count, checking the nesting depth and that the
/// elements can fit in the bytes left.
fn read_array_header(c: &mut Cursor<'_>, depth: u32) -> Result<(ValueType, u64)> {
    if depth >= 4 {
        return Err(invalid!(kind: Implausible,
            "arrays nested deeper than 4 levels at offset {}",
            c.position()
        ));
    }
    let elem_id = c.u32("array element type")?;
    let elem = ValueType::from_id(elem_id).ok_or_else(|| {
        invalid!(kind: UnknownType,
            "unknown array element type {elem_id} at offset {}",
            c.position() - 4
        )
    })?;
    let count = c.u64("array length")?;
    c.check_count(count, elem.min_size(), "array element")?;
    Ok((elem, count))
}

/// Moves the cursor over an array (payload), checking it as [`Value::read`] does; returns
/// its element type and count.
fn skip_array(c: &mut Cursor<'_>, depth: u32) -> Result<(ValueType, u64)> {
    let (elem, len) = read_array_header(c, depth)?;
    match elem.fixed_size() {
        // `read_array_header` checked that `len` elements of this size fit.
        Some(size) => {
            c.take(len * size as u64, "array elements")?;
        }
        None => (0..len).try_for_each(|_| skip(c, elem, depth + 1))?,
    }
    Ok((elem, len))
}

/// Moves the cursor over a value of type `ty`, checking it as [`Value::read`] does.
fn skip(c: &mut Cursor<'_>, ty: ValueType, depth: u32) -> Result<()> {
    match ty {
        ValueType::Bool => read_bool(c).map(drop),
        ValueType::String => read_string_bytes(c, "string value").map(drop),
        ValueType::Array => skip_array(c, depth).map(drop),
        fixed => c.take(fixed.min_size() as u64, "value").map(drop),
    }
}

/// JSON has no NaN or infinity: those become the strings "NaN", "inf", "-inf".
fn finite_or_string(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

/// Reads a GGUF string (u64 length + bytes) without copying.
pub fn read_string_bytes<'a>(c: &mut Cursor<'a>, what: &str) -> Result<&'a [u8]> {
    let len = c.u64(what)?;
    c.take(len, what)
}

/// Reads a GGUF string that must be UTF-8 (keys and tensor names).
pub fn read_utf8<'a>(c: &mut Cursor<'a>, what: &str) -> Result<&'a str> {
    let start = c.position();
    let bytes = read_string_bytes(c, what)?;
    std::str::from_utf8(bytes)
        .map_err(|_| invalid!(kind: BadEncoding, "{what} at offset {start} is not valid UTF-8"))
}

/// Writes a GGUF string (u64 length + bytes).
pub fn write_string_bytes(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())?;
    w.write_all(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{invalid_kind, InvalidKind};

    #[test]
    fn every_type_round_trips_through_bytes() {
        let values = vec![
            Value::U8(7),
            Value::I8(-3),
            Value::U16(65535),
            Value::I16(-2),
            Value::U32(1 << 31),
            Value::I32(-5),
            Value::F32(1.5),
            Value::Bool(true),
            Value::string("héllo"),
            Value::Array(
                ValueType::String,
                vec![Value::string("a"), Value::string("")],
            ),
            Value::U64(u64::MAX),
            Value::I64(i64::MIN),
            Value::F64(-0.25),
        ];
        for v in values {
            let mut buf = Vec::new();
            v.write_payload(&mut buf).unwrap();
            let mut c = Cursor::new(&buf);
            let back = Value::read(&mut c, v.value_type(), 0).unwrap();
            assert_eq!(back, v);
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn bad_bool_absurd_array_and_deep_nesting_are_errors() {
        let mut c = Cursor::new(&[2u8]);
        assert!(Value::read(&mut c, ValueType::Bool, 0).is_err());

        let mut buf = Vec::new();
        buf.extend_from_slice(&(ValueType::U64 as u32).to_le_bytes());
        buf.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = Value::read(&mut Cursor::new(&buf), ValueType::Array, 0).unwrap_err();
        assert_eq!(invalid_kind(&err), Some(InvalidKind::Implausible), "{err}");

        let mut nested = Vec::new();
        for _ in 0..6 {
            nested.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
            nested.extend_from_slice(&1u64.to_le_bytes());
        }
        nested.extend_from_slice(&[0u8; 16]);
        let err = Value::read(&mut Cursor::new(&nested), ValueType::Array, 0).unwrap_err();
        assert_eq!(invalid_kind(&err), Some(InvalidKind::Implausible), "{err}");
    }

    #[test]
    fn raw_arrays_keep_their_bytes_and_fail_as_parsed_ones_do() {
        let arrays = [
            Value::Array(ValueType::U32, (0..5).map(Value::U32).collect()),
            Value::Array(
                ValueType::String,
                vec![
                    Value::string("a"),
                    Value::string(""),
                    Value::string("héllo"),
                ],
            ),
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
            Value::Array(
                ValueType::Array,
                vec![Value::Array(ValueType::I8, vec![Value::I8(-1)])],
            ),
            Value::Array(ValueType::F64, vec![]),
        ];
        for v in arrays {
            let mut buf = Vec::new();
            v.write_payload(&mut buf).unwrap();
            buf.push(0xee); // the next value's first byte: not taken
            let mut c = Cursor::new(&buf);
            let raw = Value::read_raw_array(&mut c, 0).unwrap();
            assert_eq!(c.remaining(), 1);
            let Value::RawArray(a) = &raw else {
                panic!("{raw:?}")
            };
            assert_eq!(a.payload(), &buf[..buf.len() - 1]);
            assert_eq!(a.parse().unwrap(), v);
            assert_eq!(raw.value_type(), ValueType::Array);
            assert_eq!(
                (raw.to_json(2), raw.to_display(2)),
                (v.to_json(2), v.to_display(2))
            );
            let mut out = Vec::new();
            raw.write_payload(&mut out).unwrap();
            assert_eq!(out, a.payload());
            // Every truncation fails, with the parser's error.
            for cut in 0..buf.len() - 1 {
                let raw = Value::read_raw_array(&mut Cursor::new(&buf[..cut]), 0).unwrap_err();
                let parsed =
                    Value::read(&mut Cursor::new(&buf[..cut]), ValueType::Array, 0).unwrap_err();
                assert_eq!(raw.to_string(), parsed.to_string(), "cut at {cut}");
            }
        }
        // A bad bool inside, an absurd count, too deep: the parser's errors.
        let mut bad = Vec::new();
        Value::Array(ValueType::Bool, vec![Value::Bool(true)])
            .write_payload(&mut bad)
            .unwrap();
        *bad.last_mut().unwrap() = 2;
        let mut huge = Vec::new();
        huge.extend_from_slice(&(ValueType::U64 as u32).to_le_bytes());
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut nested = Vec::new();
        for _ in 0..6 {
            nested.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
            nested.extend_from_slice(&1u64.to_le_bytes());
        }
        nested.extend_from_slice(&[0u8; 16]);
        for bytes in [bad, huge, nested] {
            let raw = Value::read_raw_array(&mut Cursor::new(&bytes), 0).unwrap_err();
            let parsed = Value::read(&mut Cursor::new(&bytes), ValueType::Array, 0).unwrap_err();
            assert_eq!(raw.to_string(), parsed.to_string());
            assert_eq!(invalid_kind(&raw), invalid_kind(&parsed));
        }
    }

    #[test]
    fn json_and_display_cut_long_arrays() {
        let v = Value::Array(ValueType::U32, (0..10).map(Value::U32).collect());
        assert_eq!(v.to_json(3), json!([0, 1, 2]));
        assert_eq!(v.to_display(2), "[0, 1, ...] (10 x u32)");
        assert_eq!(Value::F32(f32::NAN).to_json(1), json!("NaN"));
    }
}

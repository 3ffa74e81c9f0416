//! Split GGUF, as llama.cpp's `gguf-split` writes it and `llama_model_loader` reads it:
//! files `PREFIX-00001-of-0000N.gguf` .. `PREFIX-0000N-of-0000N.gguf`, each with the keys
//! `split.no` (u16, from 0), `split.count` (u16) and `split.tensors.count` (i32, all files);
//! the first holds the model's metadata. [`open_model`] reads such a set as one model.

use super::{Arrays, Value};
use crate::formats::{Format, TensorSource};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `split.no`: the file's index, from 0 (u16).
pub const SPLIT_NO: &str = "split.no";
/// `split.count`: the number of files (u16).
pub const SPLIT_COUNT: &str = "split.count";
/// `split.tensors.count`: tensors in all files together (i32).
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
/// The three keys, in the order llama.cpp writes them.
pub const SPLIT_KEYS: [&str; 3] = [SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT];

/// `llama_split_path`: the name of file `no` (from 0) of `count` for `prefix`.
pub fn split_path(prefix: &str, no: u16, count: u16) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", u32::from(no) + 1)
}

/// `llama_split_prefix`: the prefix of `path` when it is file `no` of `count`.
pub fn split_prefix(path: &str, no: u16, count: u16) -> Option<&str> {
    path.strip_suffix(&format!("-{:05}-of-{count:05}.gguf", u32::from(no) + 1))
}

/// The `(split.no, split.count)` of a GGUF's metadata; `(0, 1)` without the keys.
pub fn split_info(meta: &[(String, Value)]) -> Result<(u16, u16)> {
    let get = |key: &str| -> Result<Option<u16>> {
        match meta.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid!("{key} must be a u16")),
        }
    };
    let count = get(SPLIT_COUNT)?.unwrap_or(1);
    let no = get(SPLIT_NO)?.unwrap_or(0);
    if count > 1 && no >= count {
        bail_invalid!("{SPLIT_NO} {no} is not below {SPLIT_COUNT} {count}");
    }
    Ok((no, count.max(1)))
}

/// Opens a model: a GGUF that is the first of a split set comes with its other files (its
/// tensors' [`crate::formats::TensorInfo::file`] is the split index), with the first
/// file's metadata; any other input is [`TensorSource::open`]. A later file of a set, a
/// missing file, a file whose `split.no` is not its place, duplicate tensor names or a
/// tensor count other than `split.tensors.count` is invalid input. Metadata arrays are
/// kept as `arrays` says.
pub fn open_model(path: &Path, arrays: Arrays) -> Result<TensorSource> {
    let mut src = TensorSource::open_with(path, arrays)?;
    if src.format != Format::Gguf {
        return Ok(src);
    }
    let (no, count) = split_info(&src.metadata)?;
    if count == 1 {
        return Ok(src);
    }
    let name = path.to_string_lossy();
    if no != 0 {
        bail_invalid!(
            "{} is file {} of a {count}-file split model; give the first (-00001-of-{count:05}.gguf)",
            path.display(),
            u32::from(no) + 1
        );
    }
    let prefix = split_prefix(&name, 0, count).ok_or_else(|| {
        invalid!(
            "{} has {SPLIT_COUNT} {count} but is not named PREFIX-00001-of-{count:05}.gguf",
            path.display()
        )
    })?;
    let expected = src
        .metadata
        .iter()
        .find(|(k, _)| k == SPLIT_TENSORS_COUNT)
        .and_then(|(_, v)| v.as_u64());
    for i in 1..count {
        let part_path = PathBuf::from(split_path(prefix, i, count));
        let part = TensorSource::open_with(&part_path, arrays)?;
        if part.format != Format::Gguf || split_info(&part.metadata)? != (i, count) {
            bail_invalid!(
                "{} is not file {} of {count} of this split model",
                part_path.display(),
                u32::from(i) + 1
            );
        }
        let file = src.files.len();
        src.tensors.extend(part.tensors.into_iter().map(|mut t| {
            t.file += file;
            t
        }));
        src.files.extend(part.files);
    }
    let mut seen = HashSet::new();
    if let Some(t) = src.tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        bail_invalid!("tensor {} appears twice in the split model", t.name);
    }
    if let Some(n) = expected.filter(|&n| n != src.tensors.len() as u64) {
        bail_invalid!(
            "split model: {SPLIT_TENSORS_COUNT} is {n} but its {count} files hold {} tensors",
            src.tensors.len()
        );
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_split_path() {
        assert_eq!(split_path("out/m", 0, 3), "out/m-00001-of-00003.gguf");
        assert_eq!(split_path("m", 2, 3), "m-00003-of-00003.gguf");
        assert_eq!(split_prefix("a/m-00001-of-00003.gguf", 0, 3), Some("a/m"));
        assert_eq!(split_prefix("a/m-00002-of-00003.gguf", 0, 3), None);
        assert_eq!(split_prefix("m.gguf", 0, 1), None);
    }

    #[test]
    fn split_info_reads_the_keys_or_defaults_to_one_file() {
        assert_eq!(split_info(&[]).unwrap(), (0, 1));
        let meta = |no: Value, count: Value| {
            vec![(SPLIT_NO.to_string(), no), (SPLIT_COUNT.to_string(), count)]
        };
        assert_eq!(
            split_info(&meta(Value::U16(2), Value::U16(3))).unwrap(),
            (2, 3)
        );
        assert!(split_info(&meta(Value::U16(3), Value::U16(3))).is_err());
        assert!(split_info(&meta(Value::U16(0), Value::string("x"))).is_err());
    }
}

//! Hugging Face bitsandbytes 4-bit checkpoints (`quantize --format bnb-safetensors`).
//!
//! Writes a folder with `model.safetensors` and `config.json` laid out as transformers
//! saves a `load_in_4bit` model: for each quantized linear weight `W`, the tensors
//! `W` (packed codes, U8 `[ceil(n/2), 1]`), `W.absmax`, `W.quant_map`, with double
//! quantization also `W.nested_absmax` and `W.nested_quant_map`, and
//! `W.quant_state.bitsandbytes__{nf4,fp4}` (the JSON of bitsandbytes'
//! `QuantState.as_dict(packed=True)`, byte for byte as `json.dumps` writes it). Embeddings,
//! `lm_head`, norms and every tensor that is not a 2-D `.weight` are kept as they are.
//!
//! A Hugging Face folder's tokenizer and generation files ([`CARRIED_FILES`]) are copied
//! into the output folder with the rest. A GGUF input is written back under its Hugging
//! Face names with the forward transforms undone and a config.json built from its
//! hyperparameters ([`crate::convert::reverse`]); its tensors in quantized ggml types
//! are dequantized through their codec first (kept tensors are then stored as F32).

use super::encode::FourBitEncoder;
use super::report::{Outcome, Report};
use super::{encode_tensor, encode_values, RunOptions};
use crate::convert::reverse::{Back, Reversed};
use crate::formats::atomic::{file_sha256, AtomicDir};
use crate::formats::ggml_type::GgmlType;
use crate::formats::safetensors_writer::{header_estimate, SafetensorsWriter, StTensor};
use crate::formats::{f32_le_bytes, Format, TensorInfo, TensorSource, TensorType};
use crate::invalid;
use crate::model::ModelConfig;
use crate::quant::bnb::{self, FourBit};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde_json::{json, Map, Value as Json};
use std::path::Path;
use std::time::Instant;

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct BnbOptions {
    /// NF4 or FP4.
    pub kind: FourBit,
    /// Elements per block (bitsandbytes default 64).
    pub block_size: usize,
    /// Quantize the absmax values again (`bnb_4bit_use_double_quant`).
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype`: `float32`, `float16` or `bfloat16`.
    pub compute_dtype: &'static str,
}

/// Whether transformers' bitsandbytes integration would quantize this tensor: the
/// weight of a linear layer (2-D `.weight`), but not embeddings, `lm_head` or norms.
pub fn is_linear_weight(name: &str, shape: &[u64]) -> Option<&'static str> {
    if shape.len() != 2 || !name.ends_with(".weight") {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let skip = [
        "lm_head",
        "embed",
        "wte",
        "wpe",
        "token_embd",
        "norm",
        "output.weight",
    ];
    if skip.iter().any(|s| lower.contains(s)) {
        return None;
    }
    Some("linear weight")
}

/// The safetensors dtype name of a tensor type, if safetensors can store it.
pub fn st_dtype(ty: TensorType) -> Option<&'static str> {
    use safetensors::Dtype as D;
    Some(match ty {
        TensorType::Qnat(_) => return st_dtype(TensorType::Ggml(ty.as_ggml()?)),
        TensorType::Safetensors(d) => match d {
            D::BOOL => "BOOL",
            D::U8 => "U8",
            D::I8 => "I8",
            D::I16 => "I16",
            D::U16 => "U16",
            D::F16 => "F16",
            D::BF16 => "BF16",
            D::I32 => "I32",
            D::U32 => "U32",
            D::F32 => "F32",
            D::F64 => "F64",
            D::I64 => "I64",
            D::U64 => "U64",
            D::F8_E4M3 => "F8_E4M3",
            D::F8_E5M2 => "F8_E5M2",
            _ => return None,
        },
        TensorType::Ggml(t) => match t {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::F64 => "F64",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            _ => return None,
        },
    })
}

/// torch's name of the dtype bitsandbytes records for the weight (`str(dtype)` less `torch.`).
fn torch_dtype(ty: TensorType) -> &'static str {
    match ty.as_ggml() {
        Some(GgmlType::F16) => "float16",
        Some(GgmlType::BF16) => "bfloat16",
        _ => "float32",
    }
}

/// Python's `repr` of a float (what `json.dumps` writes): shortest round-trip digits,
/// scientific notation below 1e-4 and from 1e16.
pub fn py_float_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into();
    }
    let sci = format!("{x:e}");
    let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mant) = mant.strip_prefix('-').map_or(("", mant), |m| ("-", m));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let s = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// The `quant_state.bitsandbytes__*` JSON, byte-identical to bitsandbytes' `json.dumps`.
pub fn quant_state_json(
    opts: &BnbOptions,
    dtype: &str,
    shape: &[u64],
    offset: Option<f32>,
) -> String {
    let kind = match opts.kind {
        FourBit::Nf4 => "nf4",
        FourBit::Fp4 => "fp4",
    };
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let mut s = format!(
        "{{\"quant_type\": \"{kind}\", \"blocksize\": {}, \"dtype\": \"{dtype}\", \"shape\": [{}]",
        opts.block_size,
        dims.join(", ")
    );
    if let Some(off) = offset {
        s += &format!(
            ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            bnb::NESTED_BLOCK,
            py_float_repr(f64::from(off))
        );
    }
    s.push('}');
    s
}

/// `quantization_config` as transformers writes it for a 4-bit bitsandbytes model.
pub fn quantization_config(opts: &BnbOptions) -> Json {
    json!({
        "_load_in_4bit": true,
        "_load_in_8bit": false,
        "bnb_4bit_compute_dtype": opts.compute_dtype,
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": match opts.kind { FourBit::Nf4 => "nf4", FourBit::Fp4 => "fp4" },
        "bnb_4bit_use_double_quant": opts.double_quant,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": null,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": true,
        "load_in_8bit": false,
        "quant_method": "bitsandbytes"
    })
}

/// The files of a Hugging Face folder carried into the output next to the weights, so
/// that `AutoTokenizer.from_pretrained(out)` and `GenerationConfig` work on it.
pub const CARRIED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// One tensor to write: the source tensor, its output name, and, for a GGUF input,
/// how its Hugging Face values are read.
struct Item<'a> {
    info: &'a TensorInfo,
    name: String,
    back: Option<&'a Back>,
}

impl Item<'_> {
    /// Whether the stored bytes can be copied as they are.
    fn copyable(&self) -> bool {
        !self.back.is_some_and(Back::transformed) && st_dtype(self.info.ty).is_some()
    }
}

/// Quantizes `input` to a bitsandbytes 4-bit folder at `output` (which must not exist),
/// carrying the model's `config.json` over with `quantization_config` added (and the
/// folder's tokenizer and generation files); a GGUF input gets its Hugging Face names
/// and layouts back. The report.
pub fn quantize(input: &Path, output: &Path, opts: &BnbOptions, run: RunOptions) -> Result<Report> {
    FourBitEncoder::new(opts.kind, opts.block_size)?;
    let src = TensorSource::open(input)?;
    let reversed = match src.format {
        Format::Gguf => Some(Reversed::open(&src)?),
        _ => None,
    };
    let (config, carried) = match &reversed {
        Some(r) => (Some(Json::Object(r.config.clone())), Vec::new()),
        None => {
            let folder = crate::convert::model_dir(input);
            let carried = folder
                .map(|d| {
                    CARRIED_FILES
                        .iter()
                        .map(|f| d.join(f))
                        .filter(|p| p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            (ModelConfig::for_source(&src)?.raw, carried)
        }
    };
    let items: Vec<Item> = match &reversed {
        Some(r) => r
            .tensors
            .iter()
            .map(|b| Item {
                info: &b.info,
                name: b.hf_name.clone(),
                back: Some(b),
            })
            .collect(),
        None => src
            .tensors
            .iter()
            .map(|t| Item {
                info: t,
                name: t.name.clone(),
                back: None,
            })
            .collect(),
    };
    let qtype = format!("{:?}", opts.kind).to_ascii_uppercase();
    let mut report = Report::new(input, Some(output), qtype, false, run.threads);
    let started = Instant::now();
    let total: u64 = src.tensors.iter().map(TensorInfo::elements).sum();
    let bar = super::progress_bar(total, run.quiet);
    let job = Job {
        src: &src,
        items: &items,
        config,
        carried: &carried,
    };
    let outcomes = super::with_threads(run.threads, || job.write(opts, output, &bar))??;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let named: Vec<TensorInfo> = items
        .iter()
        .map(|i| TensorInfo {
            name: i.name.clone(),
            ..i.info.clone()
        })
        .collect();
    if let Err(e) = report.push_outcomes(&named, &outcomes, run.allow_nonfinite) {
        // The folder was renamed into place already: take it away again.
        std::fs::remove_dir_all(output).ok();
        return Err(e);
    }
    let model = output.join("model.safetensors");
    let sha256 = if run.digest {
        Some(file_sha256(&model)?)
    } else {
        None
    };
    report.finish(std::fs::metadata(&model)?.len(), seconds, sha256);
    Ok(report)
}

/// What one output folder is written from.
struct Job<'a> {
    src: &'a TensorSource,
    items: &'a [Item<'a>],
    config: Option<Json>,
    carried: &'a [std::path::PathBuf],
}

impl Job<'_> {
    /// Writes the bitsandbytes 4-bit folder at `out` (which must not exist).
    fn write(&self, opts: &BnbOptions, out: &Path, progress: &ProgressBar) -> Result<Vec<Outcome>> {
        let enc = FourBitEncoder::new(opts.kind, opts.block_size)?;
        let suffix = match opts.kind {
            FourBit::Nf4 => "nf4",
            FourBit::Fp4 => "fp4",
        };
        let quantized = |i: &Item| {
            is_linear_weight(&i.name, &i.info.shape).is_some()
                && crate::quant::can_decode(i.info.ty)
        };
        // Plan: which tensors are quantized; every entry's name and rank for the header size.
        let mut entries = Vec::new();
        for i in self.items {
            let t = i.info;
            if quantized(i) {
                for (sfx, rank) in [
                    ("", 2),
                    (".absmax", 1),
                    (".quant_map", 1),
                    (".nested_absmax", 1),
                    (".nested_quant_map", 1),
                ] {
                    entries.push((i.name.len() + sfx.len(), rank));
                }
                entries.push((i.name.len() + 40, 1));
            } else {
                let decodable = i.back.is_some() && crate::quant::can_decode(t.ty);
                if !(i.copyable() || decodable) {
                    return Err(invalid!(
                        "tensor {}: {} cannot be stored in safetensors",
                        t.name,
                        t.ty
                    ));
                }
                entries.push((i.name.len(), t.shape.len()));
            }
        }
        let mut meta = Map::new();
        meta.insert("format".into(), json!("pt"));
        let dir = AtomicDir::create(out)?;
        let file = std::fs::File::create(dir.join("model.safetensors"))?;
        let mut w = SafetensorsWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            header_estimate(&entries, &meta),
            meta,
        )?;
        let mut outcomes = Vec::new();
        for i in self.items {
            progress.set_message(i.name.clone());
            outcomes.push(if quantized(i) {
                write_quantized(self.src, i, &enc, opts, suffix, &mut w, progress)?
            } else {
                write_kept(self.src, i, &mut w, progress)?
            });
        }
        let mut file = w.finish()?;
        std::io::Write::flush(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let mut cfg = match &self.config {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        cfg.insert("quantization_config".into(), quantization_config(opts));
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&Json::Object(cfg))? + "\n",
        )?;
        for path in self.carried {
            let name = path.file_name().expect("a carried file has a name");
            std::fs::copy(path, dir.join(&name.to_string_lossy()))
                .with_context(|| format!("copying {}", path.display()))?;
        }
        dir.commit()?;
        Ok(outcomes)
    }
}

/// Writes a tensor that is not quantized: its bytes as stored, or (a GGUF tensor that
/// was transformed or has a quantized ggml type) its Hugging Face values as F32.
fn write_kept<W: std::io::Write + std::io::Seek>(
    src: &TensorSource,
    i: &Item,
    w: &mut SafetensorsWriter<W>,
    progress: &ProgressBar,
) -> Result<Outcome> {
    let t = i.info;
    let (dtype, bytes) = match i.back {
        Some(b) if !i.copyable() => {
            let n = t.elements() as usize;
            w.begin(
                StTensor {
                    name: i.name.clone(),
                    dtype: "F32",
                    shape: t.shape.clone(),
                },
                n as u64 * 4,
            )?;
            let mut buf = vec![0f32; n.min(1 << 20)];
            let mut done = 0;
            while done < n {
                let len = buf.len().min(n - done);
                Reversed::read(src, b, done, &mut buf[..len])?;
                w.write(&f32_le_bytes(&buf[..len]))?;
                done += len;
            }
            ("F32", n as u64 * 4)
        }
        _ => {
            let dtype = st_dtype(t.ty).expect("checked when planning");
            w.begin(
                StTensor {
                    name: i.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                },
                t.bytes,
            )?;
            super::copy_tensor(src, t, &mut |chunk: &[u8]| w.write(chunk))?;
            (dtype, t.bytes)
        }
    };
    progress.inc(t.elements());
    Ok(Outcome {
        name: i.name.clone(),
        out_type: dtype.to_string(),
        out_bytes: bytes,
        stats: None,
        reason: "kept: not a linear weight",
    })
}

fn write_quantized<W: std::io::Write + std::io::Seek>(
    src: &TensorSource,
    i: &Item,
    enc: &FourBitEncoder,
    opts: &BnbOptions,
    suffix: &str,
    w: &mut SafetensorsWriter<W>,
    progress: &ProgressBar,
) -> Result<Outcome> {
    let t = i.info;
    let n = t.elements();
    let packed = n.div_ceil(2);
    w.begin(
        StTensor {
            name: i.name.clone(),
            dtype: "U8",
            shape: vec![packed, 1],
        },
        packed,
    )?;
    let mut sink = |chunk: &[u8]| w.write(chunk);
    let encoded = match i.back {
        None => encode_tensor(src, t, enc, None, progress, &mut sink),
        Some(b) => {
            let fill = |first: usize, x: &mut [f32]| Reversed::read(src, b, first, x);
            let mut consumed = |_: usize| {};
            encode_values(
                &i.name,
                &t.shape,
                &fill,
                enc,
                None,
                progress,
                &mut sink,
                &mut consumed,
            )
        }
    }
    .with_context(|| format!("tensor {}", i.name))?;
    let absmax = encoded.side;
    let nb = absmax.len() as u64;
    let mut bytes = packed;
    let mut put = |w: &mut SafetensorsWriter<W>,
                   sfx: &str,
                   dtype: &'static str,
                   shape: Vec<u64>,
                   data: &[u8]| {
        bytes += data.len() as u64;
        w.tensor(
            StTensor {
                name: format!("{}{sfx}", i.name),
                dtype,
                shape,
            },
            data,
        )
    };
    let offset = if opts.double_quant {
        let dq = bnb::double_quantize(&absmax);
        put(w, ".absmax", "U8", vec![nb], &dq.codes)?;
        put(
            w,
            ".quant_map",
            "F32",
            vec![16],
            &f32_le_bytes(&bnb::code_table(opts.kind)),
        )?;
        put(
            w,
            ".nested_absmax",
            "F32",
            vec![dq.nested_absmax.len() as u64],
            &f32_le_bytes(&dq.nested_absmax),
        )?;
        put(
            w,
            ".nested_quant_map",
            "F32",
            vec![256],
            &f32_le_bytes(&bnb::dynamic_map_signed()),
        )?;
        Some(dq.offset)
    } else {
        put(w, ".absmax", "F32", vec![nb], &f32_le_bytes(&absmax))?;
        put(
            w,
            ".quant_map",
            "F32",
            vec![16],
            &f32_le_bytes(&bnb::code_table(opts.kind)),
        )?;
        None
    };
    let state = quant_state_json(opts, torch_dtype(t.ty), &t.shape, offset);
    put(
        w,
        &format!(".quant_state.bitsandbytes__{suffix}"),
        "U8",
        vec![state.len() as u64],
        state.as_bytes(),
    )?;
    Ok(Outcome {
        name: i.name.clone(),
        out_type: suffix.to_ascii_uppercase(),
        out_bytes: bytes,
        stats: Some(encoded.stats),
        reason: "linear weight",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (x, want) in [
            (0.05677223205566406, "0.05677223205566406"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.0, "1.0"),
            (123.5, "123.5"),
            (-2.5e-7, "-2.5e-07"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn quant_state_matches_bitsandbytes_json() {
        // As printed by bitsandbytes 0.50.2 for an 8 x 128 f16 weight.
        let o = BnbOptions {
            kind: FourBit::Nf4,
            block_size: 64,
            double_quant: true,
            compute_dtype: "bfloat16",
        };
        assert_eq!(
            quant_state_json(&o, "float16", &[8, 128], Some(0.056_772_232)),
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [8, 128], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05677223205566406}"#
        );
        let o = BnbOptions {
            double_quant: false,
            ..o
        };
        assert_eq!(
            quant_state_json(&o, "float16", &[8, 128], None),
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [8, 128]}"#
        );
    }

    #[test]
    fn linear_weight_selection() {
        assert!(is_linear_weight("model.layers.0.self_attn.q_proj.weight", &[8, 8]).is_some());
        for (n, s) in [
            ("lm_head.weight", vec![8u64, 8]),
            ("model.embed_tokens.weight", vec![8, 8]),
            ("model.norm.weight", vec![8]),
            ("model.layers.0.input_layernorm.weight", vec![8]),
            ("model.layers.0.self_attn.q_proj.bias", vec![8]),
        ] {
            assert!(is_linear_weight(n, &s).is_none(), "{n}");
        }
    }
}

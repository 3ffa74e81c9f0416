//! `quantize --list-types`: every type and mix llama-quantize knows (its `QUANT_OPTIONS`,
//! [`super::catalog`]), with bits per weight, whether an importance matrix is required and
//! whether qforge implements it, then qforge's own 4-bit types. JSON schema
//! `qforge.quantize-types/1`: `docs/quantize-types-json.md`.

use super::QUANT_OPTIONS;
use crate::formats::ggml_type::GgmlType;
use crate::formats::qnat::Scheme;
use serde::Serialize;

/// Schema identifier of `quantize --list-types --json`.
pub const SCHEMA: &str = "qforge.quantize-types/1";

/// NF4/FP4 bits per weight at the default block size of 64 with an f32 absmax per block.
const FOUR_BIT_BPW: f64 = 4.5;

/// The `--list-types --json` document.
#[derive(Debug, Serialize)]
pub struct TypeList {
    /// Always `SCHEMA`.
    pub schema: &'static str,
    /// Where the llama-quantize entries come from.
    pub source: &'static str,
    /// llama-quantize's entries in its order, then qforge's own.
    pub types: Vec<TypeEntry>,
}

/// One type or mix.
#[derive(Debug, Serialize)]
pub struct TypeEntry {
    /// The name `-t` takes (llama-quantize's spelling).
    pub name: &'static str,
    /// llama.cpp `llama_ftype`; null for types llama-quantize does not know.
    pub ftype: Option<u32>,
    /// The name this one is an alias for, or null.
    pub alias_of: Option<&'static str>,
    /// Base tensor type (ggml name); null for COPY.
    pub base_type: Option<String>,
    /// Bits per weight of the base type (mix rules raise some tensors); null for COPY.
    pub bits_per_weight: Option<f64>,
    /// Whether llama.cpp requires an importance matrix (`--imatrix`) for it.
    pub imatrix_required: bool,
    /// Whether qforge implements it (with any `--format`).
    pub implemented: bool,
    /// The `--format` values that take it as `-t` (empty when not implemented).
    pub formats: Vec<&'static str>,
    /// llama.cpp's description, or qforge's for its own types.
    pub description: &'static str,
}

/// The `quantize --format` values, as the list names them.
const GGUF: &str = "gguf";
const QNAT: &str = "qnat";
const BNB_SAFETENSORS: &str = "bnb-safetensors";

/// Whether `quantize --format qnat -t NAME` takes this name as a plain ggml type.
fn stored_by_qnat(name: &str) -> bool {
    GgmlType::from_name(name).is_some_and(|t| Scheme::try_from(t).is_ok() && t.codec().is_some())
}

/// Builds the list; `names` are the names `quantize -t` takes.
pub fn type_list(names: &[&str]) -> TypeList {
    let accepted = |name: &str| names.contains(&name);
    let mut types: Vec<TypeEntry> = QUANT_OPTIONS
        .iter()
        .map(|o| {
            let mut formats = Vec::new();
            if accepted(o.name) && o.mix().is_some() {
                formats.push(GGUF);
                if stored_by_qnat(o.name) {
                    formats.push(QNAT);
                }
            }
            TypeEntry {
                name: o.name,
                ftype: Some(o.ftype),
                alias_of: o.alias_of(),
                base_type: o.base.map(|b| b.name().to_string()),
                bits_per_weight: o.base_bits_per_weight(),
                imatrix_required: o.imatrix_required(),
                implemented: !formats.is_empty(),
                formats,
                description: o.description.trim(),
            }
        })
        .collect();
    for (name, description) in [
        ("NF4", "bitsandbytes NormalFloat4, 4.5 bpw at block size 64"),
        ("FP4", "bitsandbytes FP4, 4.5 bpw at block size 64"),
    ] {
        debug_assert!(accepted(name));
        types.push(TypeEntry {
            name,
            ftype: None,
            alias_of: None,
            base_type: None,
            bits_per_weight: Some(FOUR_BIT_BPW),
            imatrix_required: false,
            implemented: true,
            formats: vec![BNB_SAFETENSORS, QNAT],
            description,
        });
    }
    TypeList {
        schema: SCHEMA,
        source: "llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS",
        types,
    }
}

impl TypeList {
    /// Renders the list as a table.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let list = self;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<10} {:>6} {:<8} {:>7}  {:<8} {:<20} description",
            "name", "ftype", "base", "bpw", "imatrix", "qforge"
        );
        for t in &list.types {
            let bpw = t
                .bits_per_weight
                .map(|b| format!("{b:.4}"))
                .unwrap_or_else(|| "-".into());
            let ftype = t.ftype.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
            let qforge = if t.implemented {
                t.formats.join(",")
            } else {
                "no".to_string()
            };
            let _ = writeln!(
                s,
                "{:<10} {:>6} {:<8} {:>7}  {:<8} {:<20} {}",
                t.name,
                ftype,
                t.base_type.as_deref().unwrap_or("-"),
                bpw,
                if t.imatrix_required { "required" } else { "-" },
                qforge,
                t.description
            );
        }
        let implemented = list.types.iter().filter(|t| t.implemented).count();
        let _ = writeln!(
        s,
        "{} types, {implemented} implemented by qforge; -t takes the names (any case), not ftype numbers",
        list.types.len()
    );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{OutputFormat, TypeName};
    use clap::ValueEnum;

    fn names() -> Vec<&'static str> {
        TypeName::all().iter().map(|t| t.0).collect()
    }

    #[test]
    fn format_names_are_values_of_format() {
        for name in [GGUF, QNAT, BNB_SAFETENSORS] {
            assert!(OutputFormat::from_str(name, false).is_ok(), "{name}");
        }
    }

    #[test]
    fn every_name_t_takes_is_listed_as_implemented() {
        let list = type_list(&names());
        for t in TypeName::all() {
            let e = list.types.iter().find(|e| e.name == t.0).unwrap();
            assert!(e.implemented, "{}", t.0);
        }
        let implemented = list.types.iter().filter(|e| e.implemented).count();
        assert_eq!(implemented, TypeName::all().len());
        let iq2 = list.types.iter().find(|e| e.name == "IQ2_XXS").unwrap();
        assert!(iq2.imatrix_required && iq2.implemented && iq2.formats == [GGUF]);
        let iq3 = list.types.iter().find(|e| e.name == "IQ3_XXS").unwrap();
        assert!(iq3.imatrix_required && iq3.implemented && iq3.formats == [GGUF]);
        // Every llama-quantize type is implemented.
        assert!(list.types.iter().all(|e| e.implemented), "{:?}", list.types);
        assert!(TypeName::value_variants().len() == TypeName::all().len());
        let q4k = list.types.iter().find(|e| e.name == "Q4_K").unwrap();
        assert_eq!(q4k.formats, ["gguf", "qnat"]);
        assert_eq!(q4k.alias_of, Some("Q4_K_M"));
    }
}

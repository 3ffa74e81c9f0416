//! `qforge quantize --list-types`: every type and mix llama-quantize knows, and whether
//! qforge implements it ([`crate::quant::mix::type_list`]). JSON schema
//! `qforge.quantize-types/1`: `docs/quantize-types-json.md`.

use crate::cli::TypeName;
use crate::output::print_report;
use crate::quant::mix::type_list;
use anyhow::Result;

/// Runs `qforge quantize --list-types`.
pub fn run(json: bool) -> Result<()> {
    let names: Vec<&str> = TypeName::all().iter().map(|t| t.0).collect();
    let list = type_list(&names);
    print_report(json, &list, || list.render_text())
}

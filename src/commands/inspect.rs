//! `qforge inspect`: format, metadata, tensor table and totals of a model file
//! ([`crate::formats::inspect`]). JSON schema `qforge.inspect/1`: `docs/inspect-json.md`.

use crate::cli::InspectArgs;
use crate::formats::inspect::inspect;
use crate::invalid;
use crate::output::print_report;
use anyhow::Result;
use regex::Regex;

/// Runs `qforge inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let filter = args
        .filter
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| invalid!("--filter: {e}"))?;
    let inspection = inspect(&args.path, filter.as_ref(), args.max_array, args.verify)?;
    print_report(args.json, &inspection.report, || {
        inspection.render_text(args.tensors)
    })?;
    inspection.check_verified()
}

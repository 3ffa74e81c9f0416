//! The `qforge` binary: parse the command line, run, map errors to exit codes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = qforge::cli::Cli::parse();
    qforge::logging::init(cli.verbose);
    qforge::output::set_quiet(cli.quiet);
    match qforge::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if qforge::error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", qforge::error::one_line(&err));
            ExitCode::from(qforge::error::exit_code(&err))
        }
    }
}

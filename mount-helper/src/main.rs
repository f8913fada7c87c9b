//! `rfs`, the command line of rfs: parses arguments, starts logging from `RFS_LOG`, runs the
//! command, and prints errors as one line with their causes (`rfs: mounting x: ...`).
//!
//! Exit status: 0 on success, 1 on any error, 2 on bad usage (clap).

mod cli;
mod commands;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

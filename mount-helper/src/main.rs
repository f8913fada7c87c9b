//! `rfs`, the command line of rfs: parses arguments, starts logging from `RFS_LOG`, runs the
//! command, and prints errors as one line with their causes (`rfs: mounting x: ...`).
//!
//! Exit status: 0 on success, 1 on any error, 2 on bad usage (clap).
//!
//! No `unsafe` here: every system call that needs it has a safe wrapper in `rfs_fs::sys` or
//! `rfs_runner::syscall`.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod container_log;
mod host;
mod logging;
mod mountinfo;
mod network;
mod overlay_compat;
mod progress;
mod serve;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A container's init runs with the container's command as its arguments: nothing to parse.
    if let Some(fd) = commands::init::spec_fd() {
        logging::init();
        return commands::init::run(fd);
    }
    let args: Vec<String> = std::env::args().collect();
    if overlay_compat::is_overlay_invocation(&args) {
        logging::init();
        let root = std::env::var_os("RFS_ROOT").map(std::path::PathBuf::from);
        return match overlay_compat::run(root, &args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rfs-overlay: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = cli::Cli::parse_checked();
    logging::init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

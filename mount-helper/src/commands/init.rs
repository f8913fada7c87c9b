//! `rfs __init SPEC`: the container's init, started by `rfs run`'s sandbox process as a fresh
//! program so that it is single-threaded and pid 1 of the container's pid namespace. All the
//! work is `rfs_runner::process::init`; this only reads the spec and maps the outcome to an
//! exit code (125 when the container could not be set up, as docker does).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// Runs the init and returns the command's exit status.
pub(crate) fn run(spec_path: &Path) -> Result<ExitCode> {
    let outcome = rfs_runner::RunSpec::read(spec_path)
        .and_then(|spec| rfs_runner::process::init(&spec, &rfs_runner::syscall::Linux));
    match outcome {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        Err(e) => {
            eprintln!(
                "rfs: setting up the container: {}",
                rfs_runner::process::chain(&e)
            );
            Ok(ExitCode::from(125))
        }
    }
}

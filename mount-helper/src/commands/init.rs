//! The container's init: `rfs run`'s sandbox process starts this binary afresh as pid 1 of the
//! container's pid namespace, so that it is single-threaded. All the work is
//! `rfs_runner::process::init`; this starts it, reads the spec and maps the outcome to an exit
//! code (125 when the container could not be set up, as docker does).
//!
//! Inside the container the init should look like the container's command, as docker's pid 1
//! does (without `--init` it *is* the command): no host path in `/proc/1/cmdline`. So it runs
//! with the command's argv and environment, and the spec comes on an inherited descriptor
//! ([`SPEC_FD`]) that the variable [`SPEC_FD_VAR`] names; that variable, in pid 1, is what
//! makes `rfs` the init instead of a command line to parse.

use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, ExitCode};

use rfs_runner::RunSpec;

/// The variable that tells `rfs` it is a container's init, and on which descriptor its spec is.
const SPEC_FD_VAR: &str = "_RFS_INIT_SPEC_FD";

/// The descriptor the spec is passed on (the first after stdio).
const SPEC_FD: RawFd = 3;

/// The command that starts the init of `spec` (which `spec_file` holds) as a fresh program.
pub(crate) fn command(spec: &RunSpec, spec_file: OwnedFd) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/proc/self/exe");
    if let Some((first, rest)) = spec.argv.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    cmd.env(SPEC_FD_VAR, SPEC_FD.to_string());
    rfs_runner::syscall::pass_fd_on_exec(&mut cmd, spec_file, SPEC_FD);
    cmd
}

/// The descriptor of the spec when this process is a container's init: pid 1, started by
/// [`command`].
pub(crate) fn spec_fd() -> Option<RawFd> {
    let fd = std::env::var(SPEC_FD_VAR).ok()?.parse().ok()?;
    (std::process::id() == 1).then_some(fd)
}

/// Runs the init with the spec on `fd` and returns the command's exit status.
pub(crate) fn run(fd: RawFd) -> ExitCode {
    name_after_command();
    let name = Path::new("init spec");
    let outcome = rfs_runner::syscall::take_passed_fd(fd)
        .map_err(|e| rfs_runner::Error::State {
            path: name.to_path_buf(),
            source: e.into(),
        })
        .and_then(|file| RunSpec::read_from(std::fs::File::from(file), name))
        .and_then(|spec| rfs_runner::process::init(&spec, &rfs_runner::syscall::Linux));
    match outcome {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!(
                "rfs: setting up the container: {}",
                rfs_runner::process::chain(&e)
            );
            ExitCode::from(125)
        }
    }
}

/// Gives this process the command's name (`/proc/1/comm`, what `top` shows) instead of
/// `exe`, the name of `/proc/self/exe` it was started as.
fn name_after_command() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let base = Path::new(&arg0).file_name().unwrap_or(arg0.as_os_str());
    use std::os::unix::ffi::OsStrExt;
    if let Ok(name) = CString::new(base.as_bytes()) {
        // The kernel keeps the first 15 bytes; a failure only leaves the name `exe`.
        let _ = nix::sys::prctl::set_name(&name);
    }
}

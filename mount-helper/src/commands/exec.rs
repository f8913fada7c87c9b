//! `rfs exec [-i] [-t] [-d] [-u USER] [-w DIR] [-e K=V]... CONTAINER CMD...`: a command in a
//! running container (`rfs_runner::exec`), with the container's user, environment and working
//! directory unless given; the exit status is the command's (125 when rfs could not start
//! it, 126/127 as a shell has them), or 0 at once with `-d`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rfs_runner::exec::{ExecSpec, exec_in, init_of};
use rfs_runner::spec::RunSpec;
use rfs_runner::state::ContainerStore;

use crate::cli::ExecArgs;

/// Exit status when rfs itself fails before the command starts (as docker exec).
const SETUP_FAILED: u8 = 125;

/// Runs `rfs exec`.
pub(crate) fn run(root: Option<PathBuf>, args: &ExecArgs) -> Result<ExitCode> {
    match exec(root, args) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        Err(e) => {
            eprintln!("rfs: {e:#}");
            Ok(ExitCode::from(SETUP_FAILED))
        }
    }
}

fn exec(root: Option<PathBuf>, args: &ExecArgs) -> Result<i32> {
    let store = ContainerStore::new(&super::root_dir(root)?);
    let (c, sandbox) = super::lifecycle::running(&store, &args.container)?;
    let spec_path = store.dir(&c.id).join("spec.json");
    let spec = RunSpec::read(&spec_path)
        .with_context(|| format!("container {}: {}", c.name, spec_path.display()))?;
    let mut env = spec.env.clone();
    for kv in &args.env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    let exec = ExecSpec {
        argv: args.command.clone(),
        env,
        cwd: args.workdir.clone().map_or(spec.cwd.clone(), PathBuf::from),
        user: args.user.clone().unwrap_or_else(|| spec.user.clone()),
        single_id: spec.single_id,
        stdin: args.interactive,
        tty: args.tty,
    };
    if !exec.cwd.is_absolute() {
        bail!(
            "-w {}: the working directory must be absolute",
            exec.cwd.display()
        );
    }
    if args.detach && (args.tty || args.interactive) {
        bail!("-d cannot be combined with -t or -i");
    }
    let init = init_of(sandbox).with_context(|| format!("container {}", c.name))?;
    rfs_runner::exec::wait_until_set_up(init).with_context(|| format!("container {}", c.name))?;
    if args.detach {
        // The command's parent leaves the caller's session and streams; this process returns
        // once the container has it.
        return match rfs_runner::syscall::fork_single_threaded()? {
            rfs_runner::syscall::Forked::Child => {
                let detached = nix::unistd::setsid()
                    .map_err(std::io::Error::from)
                    .and_then(|_| {
                        let null = std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open("/dev/null")?;
                        nix::unistd::dup2_stdin(&null)?;
                        nix::unistd::dup2_stdout(&null)?;
                        nix::unistd::dup2_stderr(&null)?;
                        Ok(())
                    });
                let code = match detached {
                    Ok(()) => exec_in(init, &exec, &rfs_runner::syscall::Linux).unwrap_or(125),
                    Err(_) => 125,
                };
                std::process::exit(code);
            }
            rfs_runner::syscall::Forked::Parent(_) => Ok(0),
        };
    }
    exec_in(init, &exec, &rfs_runner::syscall::Linux)
        .with_context(|| format!("container {}", c.name))
}

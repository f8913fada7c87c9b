//! `rfs rm [-f] CONTAINER...`: removes containers (directory, upper, work dir, record). A
//! running container is refused unless `-f`, which kills its sandbox process (the init dies
//! with it, and its pid namespace and mounts with the init) and waits for it to go.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rfs_runner::state::{ContainerState, ContainerStore};

use crate::cli::RmArgs;

/// Runs `rfs rm`; prints each removed container's name as given, and fails if any could not
/// be removed.
pub(crate) fn run(root: Option<PathBuf>, args: &RmArgs) -> Result<ExitCode> {
    super::lifecycle::each(root, &args.containers, |store, c| {
        remove(store, c, args.force).map(|()| None)
    })
}

fn remove(store: &ContainerStore, c: &ContainerState, force: bool) -> Result<()> {
    if c.is_running() {
        if !force {
            bail!(
                "container {} is running: stop it, or remove it with `rfs rm -f {}`",
                c.name,
                c.name
            );
        }
        kill_and_wait(c)?;
    }
    let dir = store.dir(&c.id);
    // The `rfs run` of a killed container records its exit into the directory while it goes;
    // a file that appears during the removal means one more pass.
    let mut passes = 0;
    loop {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && passes < 50 => {
                passes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.with_context(|| format!("removing {}", dir.display())),
        }
    }
}

fn kill_and_wait(c: &ContainerState) -> Result<()> {
    let Some(pid) = c.pid else { return Ok(()) };
    match nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            return Err(e).with_context(|| format!("killing container {} (pid {pid})", c.name));
        }
    }
    let start = Instant::now();
    while c.is_running() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "container {} (pid {pid}) is still running after SIGKILL",
                c.name
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

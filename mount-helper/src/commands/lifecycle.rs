//! `rfs stop`, `rfs restart`, `rfs kill` and `rfs wait`: signals to a running container and waiting for its
//! end, by its record (`rfs_runner::state`) from any shell, as docker and podman have them;
//! `rfs port`, the ports it publishes; `rfs top`, its processes.
//!
//! A container's recorded pid is its sandbox process, which passes the signals it gets on to
//! the container's init and so to the command; SIGKILL of the sandbox takes the whole pid
//! namespace, and the union's mount, with it. The `rfs run` that started the container
//! records the exit status as the sandbox ends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rfs_runner::state::{ContainerState, ContainerStore, Status};

use crate::cli::{KillArgs, PortArgs, StopArgs, TopArgs, WaitArgs};

/// How often a waiter looks at a container's record.
const POLL: Duration = Duration::from_millis(50);

/// How long the exit may take to be recorded once the container's process is gone.
const RECORD_GRACE: Duration = Duration::from_secs(5);

/// A signal by name (`TERM`, `SIGTERM`, any case) or number (`15`).
pub(crate) fn parse_signal(text: &str) -> Result<Signal> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("no signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {text:?}"))
}

/// Runs one action per container; prints each container's key as given when it succeeded
/// (as docker does), and fails if any failed.
pub(crate) fn each(
    root: Option<PathBuf>,
    keys: &[String],
    act: impl FnMut(&ContainerStore, &ContainerState) -> Result<Option<String>>,
) -> Result<ExitCode> {
    each_saying(root, keys, true, act)
}

/// [`each`], printing the keys only when `say`.
fn each_saying(
    root: Option<PathBuf>,
    keys: &[String],
    say: bool,
    mut act: impl FnMut(&ContainerStore, &ContainerState) -> Result<Option<String>>,
) -> Result<ExitCode> {
    let store = ContainerStore::new(&super::root_dir(root)?);
    let mut failed = false;
    for key in keys {
        let result = store
            .find(key)
            .map_err(anyhow::Error::from)
            .and_then(|c| c.with_context(|| format!("no such container: {key}")))
            .and_then(|c| act(&store, &c));
        match result {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) if say => println!("{key}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("rfs: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The container `key` and its sandbox's pid, if it runs.
///
/// # Errors
/// No such container, or it is not running.
pub(crate) fn running(store: &ContainerStore, key: &str) -> Result<(ContainerState, i32)> {
    let c = store
        .find(key)?
        .with_context(|| format!("no such container: {key}"))?;
    match c.pid.filter(|_| c.is_running()) {
        Some(pid) => Ok((c, pid)),
        None => bail!("container {} is not running", c.name),
    }
}

fn signal(c: &ContainerState, sig: Signal) -> Result<()> {
    let Some(pid) = c.pid.filter(|_| c.is_running()) else {
        bail!("container {} is not running", c.name);
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("signalling container {} (pid {pid})", c.name)),
    }
}

/// Waits until the container's process is gone, at most `limit`; whether it is.
fn wait_gone(c: &ContainerState, limit: Option<Duration>) -> bool {
    let start = Instant::now();
    while c.is_running() {
        if limit.is_some_and(|l| start.elapsed() >= l) {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// The container's record once its exit is recorded (or it is gone without one).
fn final_state(store: &ContainerStore, c: &ContainerState) -> Result<ContainerState> {
    wait_gone(c, None);
    let start = Instant::now();
    loop {
        let now = store.load(&c.id)?;
        if now.status != Status::Running || start.elapsed() > RECORD_GRACE {
            return Ok(now);
        }
        std::thread::sleep(POLL);
    }
}

/// The container's stop signal: `--stop-signal` of its `rfs run`, else its image's
/// `StopSignal`, else SIGTERM.
fn stop_signal(root: &std::path::Path, c: &ContainerState) -> Result<Signal> {
    if let Some(text) = &c.stop_signal {
        return parse_signal(text)
            .with_context(|| format!("container {}: its --stop-signal", c.name));
    }
    let configured = super::store::Container::find(root, &c.id)?
        .and_then(|found| {
            let store = rfs_fs::store::Store::open(root).ok()?;
            found.stored_image(&store)
        })
        .and_then(|image| image.config.config.and_then(|s| s.stop_signal));
    match configured {
        Some(text) => parse_signal(&text)
            .with_context(|| format!("container {}: the image's StopSignal", c.name)),
        None => Ok(Signal::SIGTERM),
    }
}

/// Runs `rfs stop`: the stop signal (or `--signal`), then SIGKILL after `-t` seconds.
pub(crate) fn stop(root: Option<PathBuf>, args: &StopArgs) -> Result<ExitCode> {
    stop_saying(root, args, true)
}

/// Runs `rfs restart`: stops the containers (quietly), then starts them.
pub(crate) fn restart(root: Option<PathBuf>, args: &StopArgs) -> Result<ExitCode> {
    let stopped = stop_saying(root.clone(), args, false)?;
    if stopped != ExitCode::SUCCESS {
        return Ok(stopped);
    }
    let start = crate::cli::StartArgs {
        attach: false,
        containers: args.containers.clone(),
    };
    super::run::start(root, &start)
}

fn stop_saying(root: Option<PathBuf>, args: &StopArgs, say: bool) -> Result<ExitCode> {
    let dir = super::root_dir(root.clone())?;
    let grace = Duration::from_secs(args.time);
    each_saying(root, &args.containers, say, |store, c| {
        if !c.is_running() {
            // Stopping a stopped container is not an error (docker, podman).
            return Ok(None);
        }
        let sig = match &args.signal {
            Some(s) => parse_signal(s)?,
            None => stop_signal(&dir, c)?,
        };
        signal(c, sig)?;
        if !wait_gone(c, Some(grace)) {
            log::info!(
                "container {} still runs {}s after {sig}; killing it",
                c.name,
                args.time
            );
            signal(c, Signal::SIGKILL)?;
            if !wait_gone(c, Some(Duration::from_secs(10))) {
                bail!("container {} is still running after SIGKILL", c.name);
            }
        }
        final_state(store, c)?;
        Ok(None)
    })
}

/// Runs `rfs kill`.
pub(crate) fn kill(root: Option<PathBuf>, args: &KillArgs) -> Result<ExitCode> {
    let sig = parse_signal(&args.signal)?;
    each(root, &args.containers, |_, c| {
        signal(c, sig)?;
        Ok(None)
    })
}

/// Runs `rfs wait`: prints each container's exit status once it has ended.
pub(crate) fn wait(root: Option<PathBuf>, args: &WaitArgs) -> Result<ExitCode> {
    each(root, &args.containers, |store, c| {
        let end = final_state(store, c)?;
        match (end.status, end.exit_code) {
            (Status::Exited, Some(code)) => Ok(Some(code.to_string())),
            (Status::Created, _) => bail!("container {} was never started", c.name),
            _ => bail!(
                "container {}: its process is gone without an exit status (rfs run was killed)",
                c.name
            ),
        }
    })
}

/// Runs `rfs port`: `CONTAINER_PORT/PROTO -> HOST_IP:HOST_PORT` per published port, as
/// docker prints them.
pub(crate) fn port(root: Option<PathBuf>, args: &PortArgs) -> Result<ExitCode> {
    let store = ContainerStore::new(&super::root_dir(root)?);
    let c = store
        .find(&args.container)?
        .with_context(|| format!("no such container: {}", args.container))?;
    for mapping in &c.ports {
        // Recorded as `HOST_IP:HOST_PORT->CONTAINER_PORT/PROTO`.
        if let Some((host, container)) = mapping.split_once("->") {
            println!("{container} -> {host}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `rfs top`: the processes in the container's pid namespace, as the host sees them
/// (`PID`, `PPID`, `UID`, the command line), oldest first.
pub(crate) fn top(root: Option<PathBuf>, args: &TopArgs) -> Result<ExitCode> {
    let store = ContainerStore::new(&super::root_dir(root)?);
    let (c, sandbox) = running(&store, &args.container)?;
    let init =
        rfs_runner::exec::init_of(sandbox).with_context(|| format!("container {}", c.name))?;
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let theirs = ns(init).with_context(|| format!("container {}: its pid namespace", c.name))?;
    let mut rows = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        else {
            continue;
        };
        if ns(pid).as_ref() != Some(&theirs) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("?")
                .to_string()
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ");
        let start = rfs_runner::state::process_start_time(pid).unwrap_or(0);
        rows.push((start, pid, field("PPid:"), field("Uid:"), command));
    }
    rows.sort();
    println!("{:<8} {:<8} {:<8} COMMAND", "PID", "PPID", "UID");
    for (_, pid, ppid, uid, command) in rows {
        println!("{pid:<8} {ppid:<8} {uid:<8} {command}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        for text in ["TERM", "SIGTERM", "sigterm", "15", " term "] {
            assert_eq!(parse_signal(text).unwrap(), Signal::SIGTERM, "{text}");
        }
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}

//! `rfs exec`: one more process in a running container, as runc and youki start one. The
//! caller joins the namespaces of the container's init (user first, so it may join the
//! others; then ipc, uts, net, pid and mount) and its root (`fchdir` to the init's root, opened
//! once in the user namespace, whose processes alone the container's FUSE mount lets in, and
//! before the mount namespace changed; then `chroot`), resolves the user in the container's
//! own `/etc/passwd`, forbids new privileges, drops to that user and starts the command, which
//! is in the container's pid namespace (`setns` of a pid namespace applies to children). The
//! caller stays as the command's parent and passes signals on.
//!
//! The caller must be single-threaded: the kernel refuses `setns` into a user namespace to a
//! process with several threads.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use nix::sys::signal::Signal;

use crate::process::{
    CommandIo, Spawned, become_user, block_signals, spawn_command, wait_forwarding,
};
use crate::syscall::{self, Syscall};
use crate::{Error, Result, user};

/// What to start in the container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Its environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Its working directory in the container.
    pub cwd: PathBuf,
    /// `USER[:GROUP]`, resolved in the container.
    pub user: String,
    /// The container has a single mapped id: everyone is root.
    pub single_id: bool,
    /// Whether the command reads the caller's stdin (`-i`); else `/dev/null`.
    pub stdin: bool,
    /// A terminal for the command (`-t`): a pty of the container's own devpts, so `tty` names
    /// it there, relayed to the caller's terminal.
    pub tty: bool,
}

/// The container's init: the one child of its sandbox process `sandbox`.
///
/// # Errors
/// The sandbox has no child (the container is gone or not started).
pub fn init_of(sandbox: i32) -> Result<i32> {
    let children = std::fs::read_to_string(format!("/proc/{sandbox}/task/{sandbox}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Join {
            what: "process tree",
            pid: sandbox,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// Waits until the init `init` has set the container up: it starts the command only after
/// its mount namespace, its root and its user are in place, so a child of it means they are
/// (an exec that joined earlier would join the sandbox's view instead). At most 10 s.
///
/// # Errors
/// The init has no child in that time (it failed, or the container ended).
pub fn wait_until_set_up(init: i32) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .unwrap_or_default();
        if !children.trim().is_empty() {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err(Error::Join {
                what: "running command",
                pid: init,
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The namespaces joined, in order: the user namespace first (it grants the right to join
/// the others), the mount namespace last (after it, `/proc` is the container's).
const NAMESPACES: [(&str, &str, CloneFlags); 6] = [
    ("user", "user namespace", CloneFlags::CLONE_NEWUSER),
    ("ipc", "ipc namespace", CloneFlags::CLONE_NEWIPC),
    ("uts", "uts namespace", CloneFlags::CLONE_NEWUTS),
    ("net", "network namespace", CloneFlags::CLONE_NEWNET),
    ("pid", "pid namespace", CloneFlags::CLONE_NEWPID),
    ("mnt", "mount namespace", CloneFlags::CLONE_NEWNS),
];

/// Joins the namespaces and the root of the container whose init is `init` (see the module
/// docs); afterwards `/` is the container's root. For `exec`, and for `rfs cp` of a running
/// container.
///
/// # Errors
/// The process has threads, or a namespace or the root could not be joined.
pub fn join(init: i32) -> Result<()> {
    let threads = syscall::thread_count().unwrap_or(1);
    if threads > 1 {
        return Err(Error::MultiThreaded { threads });
    }
    let join_err = |what, source| Error::Join {
        what,
        pid: init,
        source,
    };
    let proc = PathBuf::from(format!("/proc/{init}"));
    // Everything is opened before the first setns: afterwards /proc may be another's.
    let mut joins = Vec::new();
    for (name, what, flag) in NAMESPACES {
        let path = proc.join("ns").join(name);
        let ours = std::fs::metadata(Path::new("/proc/self/ns").join(name))
            .map_err(|e| join_err(what, e))?;
        let theirs = std::fs::metadata(&path).map_err(|e| join_err(what, e))?;
        // Joining the namespace one is in is refused (EINVAL for a user namespace).
        if (ours.dev(), ours.ino()) != (theirs.dev(), theirs.ino()) {
            joins.push((
                what,
                flag,
                File::open(&path).map_err(|e| join_err(what, e))?,
            ));
        }
    }
    let mut root = None;
    for (what, flag, fd) in &joins {
        nix::sched::setns(fd, *flag).map_err(|e| join_err(what, e.into()))?;
        // The root is the container's FUSE mount, which lets in only processes of its user
        // namespace: opened once in it, before the mount namespace changes.
        if *flag == CloneFlags::CLONE_NEWUSER {
            root = Some(File::open(proc.join("root")).map_err(|e| join_err("root", e))?);
        }
    }
    let root = match root {
        Some(r) => r,
        None => File::open(proc.join("root")).map_err(|e| join_err("root", e))?,
    };
    nix::unistd::fchdir(&root).map_err(|e| join_err("root", e.into()))?;
    nix::unistd::chroot(".").map_err(|source| Error::Chroot {
        new_root: proc.join("root"),
        source,
    })?;
    drop(root);
    Ok(())
}

/// Joins the container whose init is `init`, starts `spec` in it and waits; returns its
/// exit status (128+N for a signal, 127 when the program is not found, 126 when it cannot
/// be executed).
///
/// # Errors
/// A namespace, the root or the user could not be joined or taken.
pub fn exec_in(init: i32, spec: &ExecSpec, sys: &dyn Syscall) -> Result<i32> {
    join(init)?;
    let mut identity = user::resolve(&spec.user, &user::IdFiles::in_root(Path::new("/")))?;
    sys.set_no_new_privs().map_err(|source| Error::Prctl {
        what: "PR_SET_NO_NEW_PRIVS",
        source,
    })?;
    become_user(&mut identity, spec.single_id, &spec.cwd, sys)?;
    let signals = block_signals(&[Signal::SIGWINCH])?;
    // Opened in the container's root: /dev/ptmx is its own devpts's.
    let pty = if spec.tty {
        Some(crate::tty::open_pty()?)
    } else {
        None
    };
    let io = match (&pty, spec.stdin) {
        (Some(p), _) => CommandIo::Terminal(&p.slave),
        (None, true) => CommandIo::Inherit,
        (None, false) => CommandIo::NullInput,
    };
    let child = match spawn_command(&spec.argv, &spec.env, &identity.home, io) {
        Spawned::Child(pid) => pid,
        Spawned::Failed(code) => return Ok(code),
    };
    let Some(crate::tty::Pty { master, slave }) = pty else {
        return wait_forwarding(child, &signals, false, &mut |sig| sig != Signal::SIGWINCH);
    };
    // Only the command holds the terminal now: its end is the relay's end of file.
    drop(slave);
    let raw = crate::tty::RawMode::enable();
    // No relay threads: after joining a pid namespace this process may not start any.
    let code = crate::tty::relay_until_exit(&master, spec.stdin, child, &signals);
    drop(raw);
    code
}

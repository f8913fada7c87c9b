//! Processes and their order. Three processes make a container:
//!
//! 1. the caller (`rfs run`), single-threaded, forks
//! 2. the **sandbox** process, which unshares user, mount, uts, ipc (and net) namespaces while
//!    it still has one thread; the caller writes its id maps ([`UsernsMapping::apply`]) and lets
//!    it go on. The sandbox then does what its caller's closure says: rfs mounts the union
//!    there and serves it from threads (so the FUSE server lives in the container's user
//!    namespace), unshares the pid namespace ([`unshare_pid`]) and starts
//! 3. the **init** process as a fresh program ([`init`]): pid 1 of the new pid namespace,
//!    single-threaded. It makes the mounts, pivots, drops to the image's user, starts the
//!    command, reaps zombies, forwards signals and exits with the command's status.
//!
//! Each process waits for the next and passes its exit status up ([`wait_forwarding`]), so
//! `rfs run` exits as the command did (128+N for a signal N).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::spec::{Network, RunSpec};
use crate::syscall::{self, Forked, Syscall};
use crate::user::Identity;
use crate::userns::UsernsMapping;
use crate::{Error, Result, mounts, pivot, user};

/// The signals a waiting process passes on to the process it waits for.
pub const FORWARDED_SIGNALS: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The namespaces the sandbox process unshares at once (the pid namespace comes later, see
/// [`unshare_pid`]).
pub fn sandbox_namespaces(network: Network) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if network.is_own() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// The sandbox's first step: its namespaces.
///
/// # Errors
/// [`Error::Unshare`].
pub fn enter_namespaces(network: Network, sys: &dyn Syscall) -> Result<()> {
    let flags = sandbox_namespaces(network);
    sys.unshare(flags).map_err(|source| Error::Unshare {
        flags: syscall::clone_flags_name(flags),
        source,
    })
}

/// The sandbox's step after its id maps are written: make every mount private, so what the
/// sandbox mounts never reaches the host and the host's changes do not reach the container.
///
/// # Errors
/// [`Error::Mount`].
pub fn make_mounts_private(sys: &dyn Syscall) -> Result<()> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|source| Error::Mount {
        what: "make rprivate".into(),
        target: "/".into(),
        source,
    })
}

/// A new pid namespace for the children this process starts from now on; the first one is
/// its pid 1. Threads may exist by now: only a user namespace needs a single thread.
///
/// # Errors
/// [`Error::Unshare`].
pub fn unshare_pid(sys: &dyn Syscall) -> Result<()> {
    sys.unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|source| Error::Unshare {
            flags: "PID".into(),
            source,
        })
}

/// Forks the sandbox process, which enters its namespaces, waits for the caller to write its
/// id maps with `mapping`, makes its mounts private and runs `body`, exiting with what
/// `body` returns. Returns the sandbox's pid once it runs `body`.
///
/// The caller must be single-threaded (a user namespace demands it).
///
/// # Errors
/// The fork, the namespaces or the id maps failed; the sandbox is gone by then.
pub fn spawn_sandbox(
    network: Network,
    mapping: &UsernsMapping,
    sys: &dyn Syscall,
    body: impl FnOnce() -> i32,
) -> Result<Pid> {
    spawn_sandbox_then(network, mapping, sys, |_| Ok(()), body)
}

/// [`spawn_sandbox`], calling `namespaces_ready` with the sandbox's pid once its namespaces
/// exist and its id maps are written, before it goes on: what joins them from outside (the
/// network stack of [`Network::Private`]) is in place before the container starts. An error
/// there ends the sandbox.
///
/// # Errors
/// As [`spawn_sandbox`], and what `namespaces_ready` returns.
pub fn spawn_sandbox_then(
    network: Network,
    mapping: &UsernsMapping,
    sys: &dyn Syscall,
    namespaces_ready: impl FnOnce(Pid) -> Result<()>,
    body: impl FnOnce() -> i32,
) -> Result<Pid> {
    let sync = |source: std::io::Error| Error::Sync {
        peer: "sandbox",
        source,
    };
    let (up_read, up_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sync(e.into()))?;
    let (down_read, down_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sync(e.into()))?;
    let parent = nix::unistd::getpid();
    match syscall::fork_single_threaded()? {
        Forked::Child => {
            drop(up_read);
            drop(down_write);
            let code = sandbox_child(parent, network, sys, up_write, down_read, body);
            std::process::exit(code);
        }
        Forked::Parent(child) => {
            drop(up_write);
            drop(down_read);
            let fail = |e: Error| {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                e
            };
            let mut line = String::new();
            BufReader::new(std::fs::File::from(up_read))
                .read_line(&mut line)
                .map_err(|e| fail(sync(e)))?;
            match line.trim_end().strip_prefix("err ") {
                Some(msg) => return Err(fail(Error::Sandbox(msg.to_string()))),
                None if line.trim_end() != "ok" => {
                    return Err(fail(sync(std::io::ErrorKind::UnexpectedEof.into())));
                }
                None => {}
            }
            mapping.apply(child).map_err(fail)?;
            namespaces_ready(child).map_err(fail)?;
            std::fs::File::from(down_write)
                .write_all(b"go\n")
                .map_err(|e| fail(sync(e)))?;
            Ok(child)
        }
    }
}

fn sandbox_child(
    parent: Pid,
    network: Network,
    sys: &dyn Syscall,
    up: OwnedFd,
    down: OwnedFd,
    body: impl FnOnce() -> i32,
) -> i32 {
    let mut up = std::fs::File::from(up);
    // If `rfs run` is killed, the container goes with it (the init has the same setting).
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != parent
    {
        return 125;
    }
    if let Err(e) = enter_namespaces(network, sys) {
        let _ = writeln!(up, "err {}", chain(&e));
        return 125;
    }
    let _ = writeln!(up, "ok");
    drop(up);
    let mut go = String::new();
    if std::fs::File::from(down).read_to_string(&mut go).is_err() || go.trim() != "go" {
        return 125;
    }
    if let Err(e) = make_mounts_private(sys) {
        eprintln!("rfs: {}", chain(&e));
        return 125;
    }
    body()
}

/// An error and its causes on one line, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Blocks [`FORWARDED_SIGNALS`], SIGCHLD and `extra` in this thread (threads started later
/// inherit the mask) and returns the set for [`wait_forwarding`].
///
/// # Errors
/// [`Error::Signals`].
pub fn block_signals(extra: &[Signal]) -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED_SIGNALS
        .iter()
        .chain(extra)
        .chain(&[Signal::SIGCHLD])
    {
        set.add(*s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(Error::Signals)?;
    Ok(set)
}

/// The exit status a shell would report: the code, or 128+N for signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for child `pid` while passing on the signals of `signals` (blocked with
/// [`block_signals`]) that a process sent to it. `on_signal` sees each signal first and says whether to forward
/// it. With `reap_all` (pid 1), every other child that exits is reaped too.
///
/// # Errors
/// [`Error::Signals`] or [`Error::Process`].
pub fn wait_forwarding(
    pid: Pid,
    signals: &SigSet,
    reap_all: bool,
    on_signal: &mut dyn FnMut(Signal) -> bool,
) -> Result<i32> {
    loop {
        // Check first: the child may have exited before the signals were blocked.
        if let Some(code) = reap(pid, reap_all)? {
            return Ok(code);
        }
        let (sig, from_kernel) = match syscall::wait_for_signal(signals) {
            Ok(s) => s,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::Signals(e)),
        };
        if sig == Signal::SIGCHLD {
            continue;
        }
        // A signal the kernel raised (a terminal's ^C, ^\) went to the whole foreground
        // process group, the child included: passing it on would deliver it twice.
        if on_signal(sig) && !from_kernel {
            match nix::sys::signal::kill(pid, sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Process {
                        op: "signalling",
                        pid: pid.as_raw(),
                        source,
                    });
                }
            }
        }
    }
}

/// Reaps what has exited; returns `pid`'s exit code once it has.
fn reap(pid: Pid, reap_all: bool) -> Result<Option<i32>> {
    let target = if reap_all { None } else { Some(pid) };
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(None),
            Ok(status) => {
                if status.pid() == Some(pid) {
                    if let Some(code) = exit_code(status) {
                        return Ok(Some(code));
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(source) => {
                return Err(Error::Process {
                    op: "waiting for",
                    pid: pid.as_raw(),
                    source,
                });
            }
        }
    }
}

/// Everything init does before starting the command, in order: resolve the user and create
/// the working directory (while the container's files are still at `spec.rootfs`), enter a
/// mount namespace of its own, make the mounts, set the host name, bring up `lo` (own network namespace), pivot, forbid new
/// privileges, drop to the user and enter the working directory.
///
/// Returns the identity the command runs as and notices for the user.
///
/// # Errors
/// The first step that failed.
pub fn setup_container(spec: &RunSpec, sys: &dyn Syscall) -> Result<(Identity, Vec<String>)> {
    let root = spec.rootfs.as_path();
    let mut identity = user::resolve(&spec.user, &user::IdFiles::in_root(root))?;
    mounts::resolve_in_root(root, &spec.cwd, Some(mounts::TargetKind::Dir))?;
    // A mount namespace of its own: pivot_root moves the root of every process in the
    // namespace, and the sandbox (which serves and later unmounts the root) must keep the
    // host's view.
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|source| Error::Unshare {
            flags: "NS".into(),
            source,
        })?;
    let mut notices = mounts::prepare_rootfs(spec, sys)?;
    sys.sethostname(&spec.hostname)
        .map_err(|source| Error::Sethostname {
            hostname: spec.hostname.clone(),
            source,
        })?;
    if spec.network.is_own() {
        sys.set_loopback_up().map_err(Error::LoopbackUp)?;
    }
    if pivot::pivot_into(root, sys)? == pivot::RootChange::Chrooted {
        notices.push(
            "rfs: pivot_root is not possible here; the container is only chrooted".to_string(),
        );
    }
    sys.set_no_new_privs().map_err(|source| Error::Prctl {
        what: "PR_SET_NO_NEW_PRIVS",
        source,
    })?;
    if spec.single_id && (identity.uid != 0 || identity.gid != 0) {
        notices.push(format!(
            "rfs: uid {} / gid {} is not mapped (single id mapping): running as root",
            identity.uid, identity.gid
        ));
    }
    become_user(&mut identity, spec.single_id, &spec.cwd, sys)?;
    Ok((identity, notices))
}

/// Takes `identity` (root instead with a single mapped id, which it then says), in this
/// order: supplementary groups, gid, uid; then enters `cwd`. For init and for `exec`.
///
/// # Errors
/// The first step that failed.
pub fn become_user(
    identity: &mut Identity,
    single_id: bool,
    cwd: &Path,
    sys: &dyn Syscall,
) -> Result<()> {
    if single_id {
        identity.uid = 0;
        identity.gid = 0;
        identity.groups = vec![0];
    } else {
        sys.setgroups(&identity.groups)
            .map_err(|source| Error::Setgroups {
                groups: identity.groups.clone(),
                source,
            })?;
    }
    sys.setresgid(identity.gid)
        .map_err(|source| Error::Setresgid {
            gid: identity.gid,
            source,
        })?;
    sys.setresuid(identity.uid)
        .map_err(|source| Error::Setresuid {
            uid: identity.uid,
            source,
        })?;
    sys.chdir(cwd).map_err(|source| Error::Chdir {
        path: cwd.to_path_buf(),
        source,
    })
}

/// What [`spawn_command`] started, or the shell's status for a program that could not be.
pub enum Spawned {
    /// The command runs.
    Child(Pid),
    /// 127 (not found) or 126 (not executable), said on stderr.
    Failed(i32),
}

/// Where a command's standard streams go.
#[derive(Clone, Copy, Debug)]
pub enum CommandIo<'a> {
    /// This process's own.
    Inherit,
    /// stdin from `/dev/null`, stdout and stderr this process's.
    NullInput,
    /// All three on this terminal, which becomes the command's controlling terminal in a
    /// session of its own.
    Terminal(&'a std::os::fd::OwnedFd),
}

/// Starts `argv` with exactly `env` (and `HOME` from `identity` unless `env` sets it), every
/// signal back to its default disposition, its streams as `io` says.
pub fn spawn_command(argv: &[String], env: &[String], home: &Path, io: CommandIo<'_>) -> Spawned {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear();
    let mut has_home = false;
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        has_home |= k == "HOME";
        cmd.env(k, v);
    }
    if !has_home {
        cmd.env("HOME", home);
    }
    match io {
        CommandIo::Inherit => {}
        CommandIo::NullInput => {
            cmd.stdin(std::process::Stdio::null());
        }
        CommandIo::Terminal(tty) => {
            let stream = |fd: &std::os::fd::OwnedFd| fd.try_clone().map(std::process::Stdio::from);
            match (stream(tty), stream(tty), stream(tty)) {
                (Ok(i), Ok(o), Ok(e)) => {
                    cmd.stdin(i).stdout(o).stderr(e);
                }
                _ => {
                    eprintln!("rfs: exec {:?}: cannot give it the terminal", argv[0]);
                    return Spawned::Failed(126);
                }
            }
            syscall::controlling_terminal_on_exec(&mut cmd);
        }
    }
    syscall::reset_signals_on_exec(&mut cmd);
    match cmd.spawn() {
        Ok(child) => Spawned::Child(Pid::from_raw(child.id() as i32)),
        Err(e) => {
            let (code, why) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "executable file not found in $PATH"),
                std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
                _ => (126, "cannot execute"),
            };
            eprintln!("rfs: exec {:?}: {why} ({e})", argv[0]);
            Spawned::Failed(code)
        }
    }
}

/// The container's init (pid 1 of its pid namespace): sets up the container
/// ([`setup_container`]), starts the command and stays as its parent until it exits,
/// reaping orphans and forwarding signals. Returns the exit code for `rfs run`.
///
/// # Errors
/// Set-up failed (the command never started).
pub fn init(spec: &RunSpec, sys: &dyn Syscall) -> Result<i32> {
    // Blocked from the start: a SIGTERM during set-up waits and reaches the command.
    let signals = block_signals(&[])?;
    syscall::set_cloexec_from(3).map_err(Error::CloseFds)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let (identity, notices) = setup_container(spec, sys)?;
    for n in notices {
        eprintln!("{n}");
    }
    // Cleared by the credential change above, so set now: if the sandbox (our parent) dies,
    // the container dies with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| Error::Prctl {
        what: "PR_SET_PDEATHSIG",
        source,
    })?;
    if spec.tty {
        nix::unistd::setsid().map_err(|source| Error::Pty {
            op: "setsid",
            source,
        })?;
        syscall::set_controlling_terminal(std::io::stdin().as_fd()).map_err(|source| {
            Error::Pty {
                op: "TIOCSCTTY",
                source,
            }
        })?;
    }
    // The init's own stdin is the container's (a terminal, /dev/null, or the caller's).
    let pid = match spawn_command(&spec.argv, &spec.env, &identity.home, CommandIo::Inherit) {
        Spawned::Child(pid) => pid,
        Spawned::Failed(code) => return Ok(code),
    };
    wait_forwarding(pid, &signals, true, &mut |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recording;
    use std::path::PathBuf;

    fn spec(root: &Path, network: Network) -> RunSpec {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        RunSpec {
            rootfs: root.to_path_buf(),
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: PathBuf::from("/home/app"),
            user: "app".into(),
            hostname: "box".into(),
            binds: vec![],
            network,
            read_only_rootfs: false,
            tty: false,
            single_id: false,
        }
    }

    fn position(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
    }

    /// The order that keeps the host safe: namespaces before any mount, `/` rprivate before
    /// the union is mounted, the root bound before pivot_root, the old root detached, and
    /// privileges dropped only after the last mount.
    #[test]
    fn steps_run_in_order() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let spec = spec(&root, Network::None);
        let sys = Recording::new();
        enter_namespaces(spec.network, &sys).unwrap();
        make_mounts_private(&sys).unwrap();
        unshare_pid(&sys).unwrap();
        let (identity, notices) = setup_container(&spec, &sys).unwrap();
        assert_eq!((identity.uid, identity.gid), (1000, 1000));
        assert!(notices.is_empty(), "{notices:?}");
        let calls = sys.calls();
        let r = root.display();
        let order = [
            "unshare(USER|NS|UTS|IPC|NET)".to_string(),
            "mount(-, /, -, REC|PRIVATE".to_string(),
            "unshare(PID)".to_string(),
            "unshare(NS)".to_string(),
            "mount(-, /, -, REC|SLAVE".to_string(),
            format!("mount({r}, {r}, -, BIND|REC"),
            format!("mount(proc, {r}/proc, proc"),
            format!("mount(tmpfs, {r}/dev, tmpfs"),
            format!("mount(/dev/null, {r}/dev/null, -, BIND"),
            format!("mount(devpts, {r}/dev/pts, devpts"),
            format!("mount(sysfs, {r}/sys, sysfs"),
            "sethostname(box)".to_string(),
            "ioctl(lo, SIOCSIFFLAGS, UP)".to_string(),
            format!("chdir({r})"),
            "pivot_root(., .)".to_string(),
            "mount(-, ., -, REC|SLAVE".to_string(),
            "umount2(., DETACH)".to_string(),
            "chdir(/)".to_string(),
            "prctl(NO_NEW_PRIVS)".to_string(),
            "setgroups([1000])".to_string(),
            "setresgid(1000)".to_string(),
            "setresuid(1000)".to_string(),
            "chdir(/home/app)".to_string(),
        ];
        let positions: Vec<usize> = order.iter().map(|p| position(&calls, p)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "out of order: {calls:#?}"
        );
        assert!(root.join("home/app").is_dir(), "the working dir is created");
        assert!(root.join("dev/null").exists() && root.join("dev/ptmx").is_symlink());
    }

    #[test]
    fn chroot_is_the_fallback_when_pivot_root_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let spec = spec(&root, Network::Host);
        let sys = Recording::failing("pivot_root", Errno::EINVAL);
        let (_, notices) = setup_container(&spec, &sys).unwrap();
        let calls = sys.calls();
        assert!(position(&calls, "pivot_root") < position(&calls, "chroot(.)"));
        assert!(!calls.iter().any(|c| c.starts_with("umount2")));
        assert!(
            !calls.iter().any(|c| c.starts_with("ioctl(lo")),
            "host network untouched"
        );
        assert!(
            notices.iter().any(|n| n.contains("chrooted")),
            "{notices:?}"
        );
    }

    #[test]
    fn single_id_mapping_runs_as_root_without_setgroups() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let mut spec = spec(&root, Network::Host);
        spec.single_id = true;
        let sys = Recording::new();
        let (identity, notices) = setup_container(&spec, &sys).unwrap();
        assert_eq!(identity.uid, 0);
        assert!(
            notices.iter().any(|n| n.contains("uid 1000")),
            "{notices:?}"
        );
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| c.starts_with("setgroups")));
        assert!(calls.contains(&"setresuid(0)".to_string()));
    }

    #[test]
    fn a_failed_mount_stops_before_pivot() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let spec = spec(&root, Network::Host);
        let sys = Recording::failing("mount(tmpfs", Errno::EPERM);
        let e = setup_container(&spec, &sys).unwrap_err();
        assert!(matches!(e, Error::Mount { .. }), "{e}");
        assert!(!sys.calls().iter().any(|c| c.starts_with("pivot_root")));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let p = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(143)
        );
    }
}

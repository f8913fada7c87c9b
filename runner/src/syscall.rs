//! The system calls that set up a container, behind the [`Syscall`] trait, so the order of the
//! steps can be checked without root: [`Linux`] makes the calls, [`Recording`] only writes them
//! down. The setup code takes a `&dyn Syscall` from its caller (never chosen by `cfg!(test)`).
//!
//! This is the only module of the crate allowed to use `unsafe`: `fork(2)` (made safe by
//! refusing to fork a multi-threaded process), the `ioctl(2)`s nix has no safe form for, and
//! the hooks that run between fork and exec.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

/// One safe method per system call the container setup makes, named after its man page.
pub trait Syscall {
    /// `unshare(2)`: new namespaces for this process (or, for `CLONE_NEWPID`, its children).
    ///
    /// # Errors
    /// The kernel's errno (`EPERM` without the right capability, `EINVAL` for a user namespace
    /// in a multi-threaded process).
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// `mount(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// `umount2(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// `pivot_root(2)`.
    ///
    /// # Errors
    /// The kernel's errno (`EINVAL` where the root cannot be pivoted, e.g. on an initramfs).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// `chroot(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn chroot(&self, path: &Path) -> nix::Result<()>;
    /// `chdir(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// `sethostname(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// `setgroups(2)`.
    ///
    /// # Errors
    /// The kernel's errno (`EPERM` where setgroups is denied in the user namespace).
    fn setgroups(&self, groups: &[u32]) -> nix::Result<()>;
    /// `setresgid(2)` with all three ids equal.
    ///
    /// # Errors
    /// The kernel's errno (`EINVAL` for an id the user namespace does not map).
    fn setresgid(&self, gid: u32) -> nix::Result<()>;
    /// `setresuid(2)` with all three ids equal.
    ///
    /// # Errors
    /// The kernel's errno (`EINVAL` for an id the user namespace does not map).
    fn setresuid(&self, uid: u32) -> nix::Result<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: execve can no longer grant privileges (setuid bits,
    /// file capabilities).
    ///
    /// # Errors
    /// The kernel's errno.
    fn set_no_new_privs(&self) -> nix::Result<()>;
    /// `ioctl(SIOCSIFFLAGS)` on `lo` with `IFF_UP`: the loopback interface of a new network
    /// namespace starts down.
    ///
    /// # Errors
    /// The kernel's errno.
    fn set_loopback_up(&self) -> nix::Result<()>;
    /// `stat(2)`: the device and inode number of `path`, to check which root is visible.
    ///
    /// # Errors
    /// The kernel's errno.
    fn stat_dev_ino(&self, path: &Path) -> nix::Result<(u64, u64)>;
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

impl Syscall for Linux {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chroot(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chroot(path)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
        nix::unistd::setgroups(&groups)
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }

    fn set_no_new_privs(&self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn set_loopback_up(&self) -> nix::Result<()> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: `ifreq` is a plain C struct of integers and byte arrays, for which all
        // zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: the socket fd is open for the duration of the call and `req` is a live,
        // writable `ifreq` that SIOCGIFFLAGS fills in (the name is NUL-terminated).
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
        // SAFETY: SIOCGIFFLAGS just filled the `ifru_flags` member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
        Ok(())
    }

    fn stat_dev_ino(&self, path: &Path) -> nix::Result<(u64, u64)> {
        let m = std::fs::metadata(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok((m.dev(), m.ino()))
    }
}

/// Turns a C return value into `Ok` or the errno it left, the one place this module does so.
fn check(ret: libc::c_int) -> nix::Result<libc::c_int> {
    Errno::result(ret)
}

/// A test double that records each call as one line (`mount(/r, /r, -, BIND|REC)`) and
/// succeeds, except for calls named in `fail`, which return their errno.
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<String>>,
    fail: Vec<(String, Errno)>,
}

impl Recording {
    /// A recorder where every call succeeds.
    pub fn new() -> Recording {
        Recording::default()
    }

    /// A recorder where calls whose line starts with `prefix` fail with `errno`.
    pub fn failing(prefix: &str, errno: Errno) -> Recording {
        Recording {
            calls: Mutex::new(Vec::new()),
            fail: vec![(prefix.to_string(), errno)],
        }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, line: String) -> nix::Result<()> {
        let failure = self
            .fail
            .iter()
            .find(|(prefix, _)| line.starts_with(prefix.as_str()))
            .map(|(_, e)| *e);
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        failure.map_or(Ok(()), Err)
    }
}

fn show(p: Option<&Path>) -> String {
    p.map_or_else(|| "-".to_string(), |p| p.display().to_string())
}

/// `CLONE_NEWUSER|CLONE_NEWNS` as `USER|NS`.
pub fn clone_flags_name(flags: CloneFlags) -> String {
    let names = [
        (CloneFlags::CLONE_NEWUSER, "USER"),
        (CloneFlags::CLONE_NEWNS, "NS"),
        (CloneFlags::CLONE_NEWPID, "PID"),
        (CloneFlags::CLONE_NEWUTS, "UTS"),
        (CloneFlags::CLONE_NEWIPC, "IPC"),
        (CloneFlags::CLONE_NEWNET, "NET"),
        (CloneFlags::CLONE_NEWCGROUP, "CGROUP"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    v.join("|")
}

/// `MS_BIND|MS_REC` as `BIND|REC`.
pub fn mount_flags_name(flags: MsFlags) -> String {
    let v: Vec<String> = flags
        .iter_names()
        .map(|(n, _)| n.trim_start_matches("MS_").to_string())
        .collect();
    if v.is_empty() {
        "0".to_string()
    } else {
        v.join("|")
    }
}

impl Syscall for Recording {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!("unshare({})", clone_flags_name(flags)))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(format!(
            "mount({}, {}, {}, {}, {})",
            show(source),
            target.display(),
            fstype.unwrap_or("-"),
            mount_flags_name(flags),
            data.unwrap_or("-")
        ))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        let f = if flags.contains(MntFlags::MNT_DETACH) {
            "DETACH"
        } else {
            "0"
        };
        self.record(format!("umount2({}, {f})", target.display()))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(format!(
            "pivot_root({}, {})",
            new_root.display(),
            put_old.display()
        ))
    }

    fn chroot(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chroot({})", path.display()))
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chdir({})", path.display()))
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(format!("sethostname({name})"))
    }

    fn setgroups(&self, groups: &[u32]) -> nix::Result<()> {
        self.record(format!("setgroups({groups:?})"))
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        self.record(format!("setresgid({gid})"))
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        self.record(format!("setresuid({uid})"))
    }

    fn set_no_new_privs(&self) -> nix::Result<()> {
        self.record("prctl(NO_NEW_PRIVS)".to_string())
    }

    fn set_loopback_up(&self) -> nix::Result<()> {
        self.record("ioctl(lo, SIOCSIFFLAGS, UP)".to_string())
    }

    fn stat_dev_ino(&self, path: &Path) -> nix::Result<(u64, u64)> {
        // The recorder pretends every root is the same directory, so the check after
        // pivot_root passes.
        let _ = PathBuf::from(path);
        Ok((1, 1))
    }
}

/// How many threads this process has (entries of `/proc/self/task`).
///
/// # Errors
/// `/proc` is not mounted or not readable.
pub fn thread_count() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// The two sides of a successful [`fork_single_threaded`].
#[derive(Debug)]
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(nix::unistd::Pid),
    /// In the child.
    Child,
}

/// `fork(2)`, refused unless this process has exactly one thread. A forked child of a
/// multi-threaded process may only call async-signal-safe functions (another thread may have
/// held the allocator's lock); with a single thread there is no such lock, so the child may
/// run any code. This check is what makes the wrapper safe.
///
/// # Errors
/// [`crate::Error::MultiThreaded`] if another thread exists, [`crate::Error::Fork`] if the
/// kernel refuses.
pub fn fork_single_threaded() -> crate::Result<Forked> {
    let threads = thread_count()
        .map_err(|e| crate::Error::Fork(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    if threads != 1 {
        return Err(crate::Error::MultiThreaded { threads });
    }
    // SAFETY: the process has a single thread (checked just above; nothing in this function
    // starts one), so no lock can be held by a thread that does not exist in the child.
    match unsafe { nix::unistd::fork() }.map_err(crate::Error::Fork)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// The raw terminal ioctls, generated by nix as `unsafe fn`s; only the safe wrappers below
/// call them.
mod ioctls {
    #![allow(missing_docs, unreachable_pub)]
    nix::ioctl_write_int_bad!(ioctl_tiocsctty, libc::TIOCSCTTY);
    nix::ioctl_write_ptr_bad!(ioctl_tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
    nix::ioctl_read_bad!(ioctl_tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
}
use ioctls::{ioctl_tiocgwinsz, ioctl_tiocsctty, ioctl_tiocswinsz};

/// `ioctl(TIOCSCTTY)`: makes the terminal `tty` the controlling terminal of this process's
/// session (the caller must be a session leader without one).
///
/// # Errors
/// The kernel's errno.
pub fn set_controlling_terminal(tty: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: the fd is borrowed for the duration of the call; TIOCSCTTY takes an int
    // argument (0: do not steal a terminal from another session) and touches no memory.
    unsafe { ioctl_tiocsctty(tty.as_raw_fd(), 0) }.map(drop)
}

/// `ioctl(TIOCGWINSZ)`: the window size of terminal `tty`.
///
/// # Errors
/// The kernel's errno (`ENOTTY` if `tty` is not a terminal).
pub fn window_size(tty: impl AsFd) -> nix::Result<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is borrowed for the call and `ws` is a live, writable `winsize`.
    unsafe { ioctl_tiocgwinsz(tty.as_fd().as_raw_fd(), &mut ws) }?;
    Ok(ws)
}

/// `ioctl(TIOCSWINSZ)`: sets the window size of terminal `tty`.
///
/// # Errors
/// The kernel's errno.
pub fn set_window_size(tty: impl AsFd, ws: &libc::winsize) -> nix::Result<()> {
    // SAFETY: the fd is borrowed for the call and `ws` points to a live `winsize` that the
    // kernel only reads.
    unsafe { ioctl_tiocswinsz(tty.as_fd().as_raw_fd(), ws) }.map(drop)
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: marks every fd from `first` up
/// close-on-exec, so the command inherits only stdin, stdout and stderr, whatever fds the
/// caller of `rfs run` left open (an fd to a host directory would be a way out).
///
/// # Errors
/// The kernel's errno (`ENOSYS` before Linux 5.11).
pub fn set_cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range takes integers and touches no memory. With CLOSE_RANGE_CLOEXEC it
    // closes nothing, so no `OwnedFd` or `File` of this process is left dangling.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(i32::try_from(ret).unwrap_or(-1)).map(drop)
}

/// Makes `cmd` start its program with no signal blocked and every signal at its default
/// action, whatever this process blocks or ignores (init blocks the signals it forwards;
/// a caller started in the background ignores SIGINT and SIGQUIT, and ignored signals
/// survive `exec`).
pub fn reset_signals_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec in the child, where only async-signal-safe
    // calls are allowed: it calls `sigprocmask` and `signal`, both async-signal-safe, on a
    // `sigset_t` on its own stack, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for sig in 1..libc::SIGRTMIN() {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            Ok(())
        });
    }
}

/// Makes the program `cmd` starts the leader of a new session whose controlling terminal is
/// its stdin (which the caller has set to a terminal): what `exec -t` gives a command.
pub fn controlling_terminal_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec in the child, where only async-signal-safe
    // calls are allowed: `setsid` and `ioctl(TIOCSCTTY)` are plain system calls on integers
    // and allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the program `cmd` starts get SIGKILL when this process (the thread that forks it)
/// dies: a helper such as the network stack of a container must not outlive its supervisor.
pub fn kill_with_parent_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec in the child, where only async-signal-safe
    // calls are allowed: `prctl(PR_SET_PDEATHSIG)` is a plain system call on integers and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd` start its program with `fd` open as descriptor `target`, whatever `fd`'s
/// close-on-exec flag here: the way to hand a program an open file without naming its path.
/// `fd` stays open in this process until `cmd` is dropped.
pub fn pass_fd_on_exec(cmd: &mut std::process::Command, fd: OwnedFd, target: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec in the child, where only async-signal-safe
    // calls are allowed: it calls `dup2` and `fcntl` (both async-signal-safe) on integers and
    // allocates nothing. The closure owns `fd` and the command owns the closure, so the
    // descriptor is open when the hook runs.
    unsafe {
        cmd.pre_exec(move || {
            let raw = fd.as_raw_fd();
            if raw == target {
                // dup2 onto itself would leave FD_CLOEXEC set.
                let flags = libc::fcntl(raw, libc::F_GETFD);
                if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of descriptor `fd`, which this program's parent passed on with
/// [`pass_fd_on_exec`]. Call it once, first thing, before this process opens anything.
///
/// # Errors
/// `EBADF`: no such descriptor is open.
pub fn take_passed_fd(fd: RawFd) -> nix::Result<OwnedFd> {
    // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open (checked above) and was inherited across exec for this
    // purpose alone: nothing else in this process knows of it, so this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sigwaitinfo(2)`: waits for one of the (blocked) signals in `set`; returns it and whether
/// the kernel raised it itself (`SI_KERNEL`: a terminal's ^C reaches the whole foreground
/// process group, so such a signal is not passed on a second time).
///
/// # Errors
/// The kernel's errno (`EINTR` when another signal interrupted the wait).
pub fn wait_for_signal(set: &nix::sys::signal::SigSet) -> nix::Result<(Signal, bool)> {
    // SAFETY: `siginfo_t` is a plain C struct (integers and a union of them); all zeroes is a
    // valid value for it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` borrows a live `sigset_t` and `info` is a live, writable `siginfo_t`, both
    // for the duration of the call.
    let signo = check(unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) })?;
    let signal = Signal::try_from(signo)?;
    Ok((signal, info.si_code == libc::SI_KERNEL))
}

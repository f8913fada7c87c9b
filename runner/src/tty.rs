//! `-t`: a pseudo-terminal for the container. The caller opens it before the sandbox is
//! forked; the slave side becomes the container's stdin/stdout/stderr (and init makes it the
//! command's controlling terminal), while the caller puts its own terminal in raw mode and
//! copies bytes both ways. Window size changes (SIGWINCH) are copied to the pty, and the
//! kernel passes them on to the container's foreground process group.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::sys::termios::{self, SetArg, Termios};

use crate::syscall;
use crate::{Error, Result};

/// Both ends of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// The side the caller reads and writes.
    pub master: OwnedFd,
    /// The side the container uses as its terminal.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal with the window size of the caller's terminal, if it has one.
///
/// # Errors
/// [`Error::Pty`].
pub fn open_pty() -> Result<Pty> {
    let ws = syscall::window_size(std::io::stdin())
        .ok()
        .map(|w| nix::pty::Winsize {
            ws_row: w.ws_row,
            ws_col: w.ws_col,
            ws_xpixel: w.ws_xpixel,
            ws_ypixel: w.ws_ypixel,
        });
    let pty = nix::pty::openpty(ws.as_ref(), None).map_err(|source| Error::Pty {
        op: "openpty",
        source,
    })?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// Copies the window size of the caller's terminal to `master` (on SIGWINCH).
pub fn copy_window_size(master: impl AsFd) {
    if let Ok(ws) = syscall::window_size(std::io::stdin()) {
        let _ = syscall::set_window_size(master, &ws);
    }
}

/// The caller's terminal in raw mode, restored on drop.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal (`None` if it is not).
    pub fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The threads copying between the caller's stdio and the pty.
#[derive(Debug)]
pub struct Relay {
    output: JoinHandle<()>,
}

/// Starts copying the pty's output to stdout and, with `input`, stdin to the pty.
///
/// # Errors
/// [`Error::Pty`] if the master cannot be duplicated.
pub fn start_relay(master: &OwnedFd, input: bool) -> Result<Relay> {
    let dup = |fd: &OwnedFd| {
        fd.try_clone().map_err(|e| Error::Pty {
            op: "dup",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    };
    let mut from_pty = std::fs::File::from(dup(master)?);
    let output = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 8192];
        // EIO once every slave fd is closed: the container is gone.
        while let Ok(n) = from_pty.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = out.flush();
        }
    });
    if input {
        let mut to_pty = std::fs::File::from(dup(master)?);
        // Detached: it may block in read(stdin) until the process exits.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(Relay { output })
}

impl Relay {
    /// Waits until the container's output has been copied.
    pub fn finish(self) {
        let _ = self.output.join();
    }
}

/// Relays between this process's stdin/stdout and the terminal `master` in one thread, until
/// the command `child` has exited and its output is drained; passes the signals of `signals`
/// (blocked) on to it, and a window size change to the terminal. Returns the command's exit
/// status. For a process that may not start threads (one that joined a pid namespace).
///
/// # Errors
/// The signal fd cannot be made, or waiting for the child fails.
pub fn relay_until_exit(
    master: &OwnedFd,
    input: bool,
    child: nix::unistd::Pid,
    signals: &nix::sys::signal::SigSet,
) -> Result<i32> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::Signal;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    // `signals` holds SIGCHLD too (`block_signals`): an exit wakes the poll.
    let sfd = nix::sys::signalfd::SignalFd::new(signals).map_err(Error::Signals)?;
    let mut stdin_open = input;
    let mut exited: Option<i32> = None;
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout();
    let stdin = std::io::stdin();
    loop {
        if exited.is_none() {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => exited = crate::process::exit_code(status).or(exited),
                Err(nix::errno::Errno::EINTR) => {}
                Err(source) => {
                    return Err(Error::Process {
                        op: "waiting for",
                        pid: child.as_raw(),
                        source,
                    });
                }
            }
        }
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        // Once the command is gone, what it wrote is drained without waiting for more.
        let timeout = if exited.is_some() {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(exited.unwrap_or(0)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(source) => return Err(Error::Signals(source)),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (master_ready, signal_ready) = (ready(&fds[0]), ready(&fds[1]));
        let stdin_ready = stdin_open && ready(&fds[2]);
        drop(fds);
        if master_ready {
            match nix::unistd::read(master, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                // EIO: every slave end is closed.
                _ => {
                    if let Some(code) = exited {
                        return Ok(code);
                    }
                    // The command closed its terminal but lives on: wait for it.
                    let status = waitpid(child, None).map_err(|source| Error::Process {
                        op: "waiting for",
                        pid: child.as_raw(),
                        source,
                    })?;
                    return Ok(crate::process::exit_code(status).unwrap_or(0));
                }
            }
        }
        if signal_ready {
            if let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    match sig {
                        Signal::SIGCHLD => {}
                        Signal::SIGWINCH => copy_window_size(master),
                        other => {
                            let _ = nix::sys::signal::kill(child, other);
                        }
                    }
                }
            }
        }
        if stdin_ready {
            let mut input_buf = [0u8; 8192];
            match nix::unistd::read(&stdin, &mut input_buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(master, &input_buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
}

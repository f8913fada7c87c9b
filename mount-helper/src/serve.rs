//! Starting a filesystem: the one way `rfs mount` and `rfs run` serve a union.
//!
//! 1. [`Serve`] says what to serve: the lower tree, the upper dirs, the [`UnionConfig`],
//!    where and how to mount.
//! 2. [`Serve::build`] opens the union. The config names everything the union would
//!    otherwise probe from the process that opens it (ownership, the markers' xattr
//!    namespace), so it may be built in one process and user namespace and served from
//!    another: `rfs run` builds it before the container's namespaces exist and mounts it
//!    inside them.
//! 3. [`Built::mount`] mounts it, its FUSE threads serving in the background.
//! 4. The process that started it tells the process waiting for it whether it is ready,
//!    once, over a [`handshake`] pipe: [`Readiness`], ready (with a notice for the user) or
//!    failed (with the reason, which reaches the user unchanged).
//! 5. [`Mounted::serve_until_unmounted`] serves until the filesystem is unmounted from
//!    outside or a signal unmounts it (`rfs mount`); or the caller serves while it waits for
//!    something else, then [`Mounted::unmount`]s (`rfs run`: the container's end ends it).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{SigSet, Signal};

use rfs_fs::fuse::{MountOptions, Session};
use rfs_fs::lower::LowerTree;
use rfs_fs::union::{UnionConfig, UnionFs, UpperDirs};

use crate::commands::umount::{Unmounted, detached_message, unmount};
use crate::mountinfo;

/// Tunes this process's memory for a long-lived FUSE server (see
/// [`rfs_fs::sys::tune_malloc`]). Call it first: before the lower tree is built and before
/// any thread exists.
pub(crate) fn tune_memory() {
    rfs_fs::sys::tune_malloc(2);
}

/// What to serve.
pub(crate) struct Serve {
    /// The read-only layers, merged.
    pub(crate) lower: LowerTree,
    /// The writable layer; `None` serves the lower tree read-only.
    pub(crate) upper: Option<UpperDirs>,
    /// How the union stores what it cannot probe where it serves from.
    pub(crate) config: UnionConfig,
    /// Where to mount.
    pub(crate) mountpoint: PathBuf,
    /// How to mount.
    pub(crate) options: MountOptions,
}

impl Serve {
    /// Opens the union: the upper and work dirs are opened (and cleaned) here, by this
    /// process, whichever process serves them later.
    ///
    /// # Errors
    /// The upper or work dir cannot be opened.
    pub(crate) fn build(self) -> Result<Built> {
        let fs = UnionFs::with_config(self.lower, self.upper, self.config)
            .context("opening the writable layer")?;
        // Building the lower tree freed tens of megabytes that the server need not carry.
        rfs_fs::sys::release_free_memory();
        Ok(Built {
            fs: Arc::new(fs),
            mountpoint: self.mountpoint,
            options: self.options,
        })
    }
}

/// A union ready to mount.
pub(crate) struct Built {
    fs: Arc<UnionFs>,
    mountpoint: PathBuf,
    options: MountOptions,
}

impl Built {
    /// The union, for the last touches before it is mounted.
    pub(crate) fn union(&self) -> &UnionFs {
        &self.fs
    }

    /// Blocks `signals` in this thread and mounts. The FUSE threads inherit the mask, so a
    /// signal sent to the process waits for whoever `sigwait`s for it instead of landing
    /// in a FUSE thread.
    ///
    /// # Errors
    /// The signals cannot be blocked, or the mount failed; a failure that a missing or
    /// closed `/dev/fuse` explains says so.
    pub(crate) fn mount(self, signals: &SigSet) -> Result<Mounted> {
        signals.thread_block().context("blocking signals")?;
        // The absolute path is what mountinfo names; resolved before the mount exists.
        let absolute =
            mountinfo::absolute(&self.mountpoint).unwrap_or_else(|_| self.mountpoint.clone());
        let session = rfs_fs::fuse::spawn_mount(self.fs, &self.mountpoint, &self.options)
            .map_err(|e| anyhow!("{e}{}", dev_fuse_hint(&e)))?;
        Ok(Mounted {
            session,
            mountpoint: self.mountpoint,
            absolute,
        })
    }
}

/// What a failed mount may owe to `/dev/fuse`.
fn dev_fuse_hint(e: &std::io::Error) -> &'static str {
    let unusable = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_err()
    };
    if e.kind() == std::io::ErrorKind::PermissionDenied || unusable() {
        " (is /dev/fuse present and accessible? a rootless mount needs it mode 0666 and fusermount3)"
    } else {
        ""
    }
}

/// A mounted union, served by background threads.
pub(crate) struct Mounted {
    session: Session,
    /// As the caller named it, for messages.
    mountpoint: PathBuf,
    /// As mountinfo names it.
    absolute: PathBuf,
}

impl Mounted {
    /// The mount's absolute path.
    pub(crate) fn absolute(&self) -> &Path {
        &self.absolute
    }

    /// Unmounts and waits for the serving threads.
    ///
    /// # Errors
    /// The unmount failed.
    pub(crate) fn unmount(self) -> Result<()> {
        self.session
            .unmount()
            .with_context(|| format!("unmounting {}", self.mountpoint.display()))
    }

    /// Serves until the filesystem is unmounted from outside, or one of `signals` (blocked
    /// by [`Built::mount`]) unmounts it. A busy mount is detached lazily and served until
    /// its last user leaves; another signal then stops serving it at once. A failed
    /// unmount is reported and the mount kept: exiting would leave it dead. `say` tells the
    /// user.
    pub(crate) fn serve_until_unmounted(self, signals: SigSet, say: &dyn Fn(&str)) {
        // A thread waits for the (blocked) signals; this one watches both it and the
        // session, which ends by itself when the filesystem is unmounted.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(sig) = signals.wait() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
        while !self.session.is_finished() {
            let Some(sig) = next_signal(&rx) else {
                continue;
            };
            log::info!("{sig}: unmounting");
            if self.unmount_on_signal(say) {
                // The kernel ends the session once the mount is gone, which for a detached
                // mount is when its last user leaves.
                while !self.session.is_finished() {
                    if next_signal(&rx).is_some() {
                        say(&format!(
                            "rfs: stopped serving {}; the processes still inside get errors \
                             until they leave",
                            self.mountpoint.display()
                        ));
                        break;
                    }
                }
                break;
            }
        }
        // The process exits now; unmounting by path could take down a newer mount there.
        self.session.abandon();
    }

    /// Unmounts because a signal asked to; whether it is unmounted or detached.
    fn unmount_on_signal(&self, say: &dyn Fn(&str)) -> bool {
        match unmount(&self.absolute) {
            Ok(Unmounted::Now) => true,
            Ok(Unmounted::Lazily) => {
                say(&detached_message(&self.mountpoint));
                true
            }
            // Unmounted from outside meanwhile: the session is ending.
            Err(_) if mountinfo::top_at(&self.absolute).is_none() => true,
            Err(e) => {
                say(&format!(
                    "rfs: unmounting {}: {e:#}; still serving it",
                    self.mountpoint.display()
                ));
                false
            }
        }
    }
}

/// The next signal within 200 ms, if one comes.
fn next_signal(rx: &Receiver<Signal>) -> Option<Signal> {
    match rx.recv_timeout(Duration::from_millis(200)) {
        Ok(sig) => Some(sig),
        Err(RecvTimeoutError::Timeout) => None,
        // The waiting thread is gone (sigwait failed): wait without it, not in a busy loop.
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(Duration::from_millis(200));
            None
        }
    }
}

/// What the process that starts a filesystem tells the process waiting for it, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Mounted and serving.
    Ready {
        /// What the user should read (may be empty), shown as it is.
        notice: String,
    },
    /// Failed before it was ready.
    Failed {
        /// Why, shown to the user as it is.
        reason: String,
    },
}

/// Why no [`Readiness`] arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The pipe closed without a message: the process exited (or was killed) first.
    Closed,
    /// Something else than a message arrived; its first line.
    Malformed(String),
    /// Reading the pipe failed.
    Read(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("it exited before it was ready"),
            HandshakeError::Malformed(head) => {
                write!(f, "it sent {head:?}, neither \"ready\" nor \"failed\"")
            }
            HandshakeError::Read(e) => write!(f, "reading its answer: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl Readiness {
    const READY: &str = "ready";
    const FAILED: &str = "failed";

    /// The message: a line `ready` or `failed`, then the notice or the reason, verbatim
    /// (so either may span lines), then a NUL byte: the message ends there, or where the pipe
    /// does, so a process that inherited the pipe (a detached container's sandbox) cannot
    /// keep the waiter waiting.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (head, body) = match self {
            Readiness::Ready { notice } => (Self::READY, notice),
            Readiness::Failed { reason } => (Self::FAILED, reason),
        };
        format!("{head}\n{body}\0").into_bytes()
    }

    /// Decodes a whole message, as [`Readiness::encode`] wrote it.
    ///
    /// # Errors
    /// [`HandshakeError::Closed`] for nothing at all, [`HandshakeError::Malformed`] for
    /// anything else that is not a message.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Readiness, HandshakeError> {
        let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
        if bytes.is_empty() {
            return Err(HandshakeError::Closed);
        }
        let text = String::from_utf8_lossy(bytes);
        let Some((head, body)) = text.split_once('\n') else {
            return Err(HandshakeError::Malformed(text.into_owned()));
        };
        let body = body.to_owned();
        match head {
            Self::READY => Ok(Readiness::Ready { notice: body }),
            Self::FAILED => Ok(Readiness::Failed { reason: body }),
            _ => Err(HandshakeError::Malformed(head.to_owned())),
        }
    }
}

/// A pipe for one [`Readiness`]: the starting process keeps the [`Notifier`], the waiting one
/// the [`Waiter`]. Both ends close on exec, so no program started meanwhile (the container's
/// init, fusermount3) holds the pipe open and keeps the waiter waiting.
///
/// # Errors
/// The pipe cannot be made.
pub(crate) fn handshake() -> Result<(Notifier, Waiter)> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the readiness pipe")?;
    Ok((Notifier(write), Waiter(read)))
}

/// The end that says whether the filesystem is ready; dropped unsent, the waiter learns
/// that the process is gone ([`HandshakeError::Closed`]).
pub(crate) struct Notifier(OwnedFd);

impl Notifier {
    /// Sends `readiness` and closes the pipe. A waiter that is gone has nobody to tell.
    pub(crate) fn send(self, readiness: &Readiness) {
        let mut pipe = std::fs::File::from(self.0);
        if let Err(e) = pipe.write_all(&readiness.encode()) {
            log::debug!("reporting readiness: {e}");
        }
    }
}

/// The end that waits for a [`Readiness`].
pub(crate) struct Waiter(OwnedFd);

impl Waiter {
    /// Waits until the other end has sent its message or is closed.
    ///
    /// # Errors
    /// As [`Readiness::decode`], or [`HandshakeError::Read`].
    pub(crate) fn wait(self) -> Result<Readiness, HandshakeError> {
        let mut pipe = std::fs::File::from(self.0);
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    if let Some(end) = bytes.iter().position(|&b| b == 0) {
                        bytes.truncate(end);
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HandshakeError::Read(e.to_string())),
            }
        }
        Readiness::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: &Readiness) -> Readiness {
        Readiness::decode(&r.encode()).expect("decodes")
    }

    #[test]
    fn messages_round_trip_with_their_text_unchanged() {
        for r in [
            Readiness::Ready {
                notice: String::new(),
            },
            Readiness::Ready {
                notice: "rfs: writable layer in /x (deleted at unmount: --rm)\n".into(),
            },
            Readiness::Failed {
                reason: "mounting a on /b: no such file".into(),
            },
            // Text that looks like a message, spans lines, or is not ASCII stays as it is.
            Readiness::Failed {
                reason: "ready\nfailed\n\n  ünïcode: \"quoted\"\n".into(),
            },
            Readiness::Ready {
                notice: "failed\n".into(),
            },
        ] {
            assert_eq!(round_trip(&r), r);
        }
        assert_eq!(
            Readiness::Failed {
                reason: "why".into()
            }
            .encode(),
            b"failed\nwhy\0"
        );
    }

    #[test]
    fn anything_else_is_refused_as_no_message() {
        assert_eq!(Readiness::decode(b""), Err(HandshakeError::Closed));
        for (bytes, head) in [
            (&b"ready"[..], "ready"),
            (b"OK\nrfs: notice\n", "OK"),
            (b"ok 42\n", "ok 42"),
            (b"Ready\n", "Ready"),
            (b"failed \nwhy", "failed "),
        ] {
            assert_eq!(
                Readiness::decode(bytes),
                Err(HandshakeError::Malformed(head.into())),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn the_pipe_carries_one_message_or_says_the_sender_is_gone() {
        let (notifier, waiter) = handshake().expect("pipe");
        let sent = Readiness::Failed {
            reason: "x\ny".into(),
        };
        let sender = {
            let sent = sent.clone();
            std::thread::spawn(move || notifier.send(&sent))
        };
        assert_eq!(waiter.wait(), Ok(sent));
        sender.join().expect("sender");

        let (notifier, waiter) = handshake().expect("pipe");
        drop(notifier);
        assert_eq!(waiter.wait(), Err(HandshakeError::Closed));

        // A copy of the sending end kept open elsewhere does not hold the waiter.
        let (notifier, waiter) = handshake().expect("pipe");
        let copy = notifier.0.try_clone().expect("dup");
        notifier.send(&Readiness::Ready {
            notice: "id".into(),
        });
        assert_eq!(
            waiter.wait(),
            Ok(Readiness::Ready {
                notice: "id".into()
            })
        );
        drop(copy);
    }
}

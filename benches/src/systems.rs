//! The systems under comparison and how each one is mounted and unmounted.
//!
//! A [`View`] is one system's merged view of a layer [`Stack`]: a fresh FUSE or kernel mount
//! over the stack's lower dirs with its own upper and work dir, or, for [`System::Host`], the
//! stack's plain flattened copy. Dropping a view unmounts it (`fusermount3 -u`, then
//! `umount -l`; kernel: `umount`, then `umount -l`), waits for the FUSE daemon to exit and
//! removes the view's fresh upper and work dir, on every exit path.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::env;

/// One system under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub(crate) enum System {
    /// rfs (`rfs mount --lower ...`).
    #[serde(rename = "rfs")]
    Rfs,
    /// fuse-overlayfs 1.x, the Debian package.
    #[serde(rename = "fuse-overlayfs")]
    FuseOverlayfs,
    /// Kernel overlayfs (`mount -t overlay`).
    #[serde(rename = "kernel")]
    Kernel,
    /// The plain host directory (a flattened copy of the stack), no union at all.
    #[serde(rename = "host")]
    Host,
}

impl System {
    /// Every system, in table order.
    pub(crate) const ALL: [System; 4] = [
        System::Rfs,
        System::FuseOverlayfs,
        System::Kernel,
        System::Host,
    ];

    /// The name used on the command line, in the table and in JSON.
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Rfs => "rfs",
            System::FuseOverlayfs => "fuse-overlayfs",
            System::Kernel => "kernel",
            System::Host => "host",
        }
    }

    /// Parses a name from [`System::name`].
    pub(crate) fn parse(s: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .with_context(|| format!("unknown system {s:?} (rfs, fuse-overlayfs, kernel, host)"))
    }

    /// Whether this system is a FUSE daemon.
    pub(crate) fn is_fuse(self) -> bool {
        matches!(self, System::Rfs | System::FuseOverlayfs)
    }
}

/// A layer stack: lower dirs (top first) and a flattened copy for [`System::Host`].
#[derive(Clone, Debug)]
pub(crate) struct Stack {
    /// The lower dirs, leftmost on top (as `lowerdir=`).
    pub(crate) lowers: Vec<PathBuf>,
    /// The same merged tree as a plain directory.
    pub(crate) host: PathBuf,
}

/// Where a view's writable layer comes from.
#[derive(Clone, Debug)]
pub(crate) enum Upper {
    /// A fresh empty upper and work dir, removed with the view.
    Fresh,
    /// `DIR/upper` and `DIR/work`, kept across views (created when missing).
    Persistent(PathBuf),
    /// `DIR/upper` and `DIR/work` made ahead by [`Mounter::prepare_upper`] (so that making
    /// them is not timed), removed with the view.
    Prepared(PathBuf),
}

/// What every mount needs: the rfs binary and where mount points and uppers go.
#[derive(Debug)]
pub(crate) struct Mounter {
    /// The `rfs` binary.
    pub(crate) rfs: PathBuf,
    /// rfs's `--root` for directory mounts.
    rfs_root: PathBuf,
    /// Mount points live here, one per system.
    mnt_base: PathBuf,
    /// Fresh upper/work dirs live here (on the scratch filesystem).
    run_dir: PathBuf,
    counter: std::cell::Cell<u64>,
}

impl Mounter {
    /// A mounter with mount points under `mnt_base` and uppers under `run_dir`.
    pub(crate) fn new(rfs: PathBuf, mnt_base: PathBuf, run_dir: PathBuf) -> Result<Mounter> {
        fs::create_dir_all(&mnt_base)?;
        env::remove_tree(&run_dir)?;
        fs::create_dir_all(&run_dir)?;
        let rfs_root = run_dir.join("rfs-root");
        fs::create_dir_all(&rfs_root)?;
        for sys in System::ALL {
            let m = mnt_base.join(sys.name());
            fs::create_dir_all(&m)?;
            if env::is_mount_point(&m) {
                eprintln!(
                    "warning: {} is still mounted from an earlier run; unmounting",
                    m.display()
                );
                if sys.is_fuse() {
                    env::umount_fuse(&m)?;
                } else {
                    env::umount_kernel(&m)?;
                }
            }
        }
        Ok(Mounter {
            rfs,
            rfs_root,
            mnt_base,
            run_dir,
            counter: std::cell::Cell::new(0),
        })
    }

    /// A fresh, empty directory on the scratch filesystem, for one measured step.
    pub(crate) fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let d = self.run_dir.join(format!("{what}-{n}"));
        env::remove_tree(&d)?;
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// A fresh upper and work dir for [`Upper::Prepared`].
    pub(crate) fn prepare_upper(&self, sys: System) -> Result<Upper> {
        let d = self.fresh_dir(sys.name())?;
        fs::create_dir_all(d.join("upper"))?;
        fs::create_dir_all(d.join("work"))?;
        Ok(Upper::Prepared(d))
    }

    /// The directory that holds the runs' scratch dirs.
    pub(crate) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The mount point used for `sys`.
    pub(crate) fn mount_point(&self, sys: System) -> PathBuf {
        self.mnt_base.join(sys.name())
    }

    /// Mounts `stack` for `sys` (for [`System::Host`], just names the flattened copy).
    pub(crate) fn mount(&self, sys: System, stack: &Stack, upper: &Upper) -> Result<View> {
        env::check_interrupted()?;
        if sys == System::Host {
            if let Upper::Prepared(d) = upper {
                env::remove_tree(d)?;
            }
            return Ok(View {
                root: stack.host.clone(),
                guard: None,
                _scratch: None,
            });
        }
        let (dir, scratch) = match upper {
            Upper::Fresh => {
                let d = self.fresh_dir(sys.name())?;
                (d.clone(), Some(d))
            }
            Upper::Persistent(d) => (d.clone(), None),
            Upper::Prepared(d) => (d.clone(), Some(d.clone())),
        };
        let up = dir.join("upper");
        let work = dir.join("work");
        fs::create_dir_all(&up)?;
        fs::create_dir_all(&work)?;
        let mnt = self.mount_point(sys);
        let lowerdir = join_lowers(&stack.lowers);
        // Declared before the guard so that, on an early return, the mount goes first.
        let scratch = ScratchDir(scratch);
        // The guard exists before the mount command runs, so a mount that half-succeeds is
        // still cleaned up.
        let mut guard = MountGuard {
            path: mnt.clone(),
            daemon: match sys {
                System::Rfs => Some("rfs"),
                System::FuseOverlayfs => Some("fuse-overlayfs"),
                _ => None,
            },
            active: true,
        };
        let result = match sys {
            System::Rfs => env::run(
                env::cmd(
                    self.rfs.to_str().context("rfs path")?,
                    &[OsStr::new("--root"), self.rfs_root.as_os_str()],
                )
                .args([OsStr::new("mount"), OsStr::new("--lower"), &lowerdir])
                .args([OsStr::new("--upper"), up.as_os_str()])
                .args([OsStr::new("--work"), work.as_os_str()])
                .arg(&mnt),
            ),
            System::FuseOverlayfs => env::run(env::cmd(
                "fuse-overlayfs",
                &[
                    OsStr::new("-o"),
                    &overlay_options(&lowerdir, Some((&up, &work))),
                    mnt.as_os_str(),
                ],
            )),
            System::Kernel => {
                mount_kernel_overlay(&overlay_options(&lowerdir, Some((&up, &work))), &mnt)
            }
            System::Host => unreachable!(),
        };
        if let Err(e) = result {
            if !env::is_mount_point(&mnt) {
                guard.active = false;
            }
            return Err(e.context(format!("mounting {}", sys.name())));
        }
        Ok(View {
            root: mnt,
            guard: Some(guard),
            _scratch: Some(scratch),
        })
    }

    /// Mounts an image archive with `rfs mount --root ROOT IMAGE MNT` (rfs only).
    pub(crate) fn mount_image(&self, root: &Path, image: &Path) -> Result<View> {
        env::check_interrupted()?;
        let mnt = self.mount_point(System::Rfs);
        let mut guard = MountGuard {
            path: mnt.clone(),
            daemon: Some("rfs"),
            active: true,
        };
        let r = env::run(
            env::cmd(
                self.rfs.to_str().context("rfs path")?,
                &[OsStr::new("--root"), root.as_os_str(), OsStr::new("mount")],
            )
            .arg(image)
            .arg(&mnt),
        );
        if let Err(e) = r {
            if !env::is_mount_point(&mnt) {
                guard.active = false;
            }
            return Err(e);
        }
        Ok(View {
            root: mnt,
            guard: Some(guard),
            _scratch: None,
        })
    }
}

/// overlayfs (and fuse-overlayfs) `-o` options: `lowerdir=`, and the upper and work dirs.
fn overlay_options(lowerdir: &OsStr, upper_work: Option<(&Path, &Path)>) -> OsString {
    let mut o = OsString::from("lowerdir=");
    o.push(lowerdir);
    if let Some((up, work)) = upper_work {
        o.push(",upperdir=");
        o.push(up);
        o.push(",workdir=");
        o.push(work);
    }
    o
}

/// `mount -t overlay overlay -o OPTIONS AT`.
fn mount_kernel_overlay(options: &OsStr, at: &Path) -> Result<()> {
    env::run(env::cmd(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new("overlay"),
            OsStr::new("overlay"),
            OsStr::new("-o"),
            options,
            at.as_os_str(),
        ],
    ))
}

/// A read-only kernel overlay mount of `lowers` (top first) at `at`.
pub(crate) fn mount_kernel_read_only(lowers: &[PathBuf], at: &Path) -> Result<()> {
    mount_kernel_overlay(&overlay_options(&join_lowers(lowers), None), at)
}

fn join_lowers(lowers: &[PathBuf]) -> OsString {
    let mut s = OsString::new();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            s.push(":");
        }
        s.push(l);
    }
    s
}

/// Unmounts a mount point on drop (or on [`MountGuard::release`]).
#[derive(Debug)]
struct MountGuard {
    path: PathBuf,
    /// The FUSE daemon's program name (`None` for a kernel mount). Its pid is looked up
    /// only when needed (scanning `/proc` takes milliseconds: never inside a timed step).
    daemon: Option<&'static str>,
    active: bool,
}

impl MountGuard {
    /// The pid of the FUSE daemon serving this mount.
    fn daemon_pid(&self) -> Option<u32> {
        self.daemon
            .and_then(|name| env::find_process(name, &self.path))
    }

    fn release(&mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        if self.daemon.is_some() {
            let pid = self.daemon_pid();
            env::umount_fuse(&self.path)?;
            // The next step should not share the machine with a daemon still tearing down.
            if let Some(pid) = pid {
                if !env::wait_gone(pid, Duration::from_secs(30)) {
                    bail!("daemon {pid} of {} did not exit", self.path.display());
                }
            }
        } else {
            env::umount_kernel(&self.path)?;
        }
        Ok(())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("warning: unmounting {}: {e:#}", self.path.display());
        }
    }
}

/// Removes a fresh upper/work dir on drop (after the mount guard has run).
#[derive(Debug)]
struct ScratchDir(Option<PathBuf>);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            if let Err(e) = env::remove_tree(&d) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// One system's view of a stack; unmounted and cleaned up on drop.
#[derive(Debug)]
pub(crate) struct View {
    /// Where the merged tree is (the mount point, or the host copy).
    pub(crate) root: PathBuf,
    // Field order matters: the mount goes before its upper dir is removed.
    guard: Option<MountGuard>,
    /// Removed on drop.
    _scratch: Option<ScratchDir>,
}

impl View {
    /// The FUSE daemon's pid (found by scanning `/proc`: not for timed steps).
    pub(crate) fn daemon(&self) -> Option<u32> {
        self.guard.as_ref().and_then(MountGuard::daemon_pid)
    }

    /// Unmounts now, reporting errors (dropping does the same, but only warns).
    pub(crate) fn close(mut self) -> Result<()> {
        if let Some(g) = self.guard.as_mut() {
            g.release()?;
        }
        Ok(())
    }
}

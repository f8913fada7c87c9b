//! `rfs mount`: CLI arguments → what to serve → `crate::serve` builds, mounts and serves it,
//! in the foreground or as a daemon that reports its readiness (or the error) to the waiting
//! parent over the handshake pipe.
//!
//! Without `--upper`, the mount gets a fresh writable layer of the store
//! ([`rfs_fs::store::MountLayer`]): deleted if the mount fails, kept after the unmount unless
//! `--rm` (or `rfs umount --rm`) asked for it to go. SIGINT, SIGTERM and SIGHUP unmount; a busy
//! mount is detached lazily and served until its last user leaves (a second signal stops
//! serving it at once), so a signal never leaves a dead mount behind.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};

use rfs_fs::fuse::MountOptions;
use rfs_fs::lower::{LayerInput, LowerTree};
use rfs_fs::ovl::Namespace;
use rfs_fs::store::{Finished, MountLayer, Store};
use rfs_fs::union::{UnionConfig, UpperDirs};

use crate::cli::MountArgs;
use crate::mountinfo;
use crate::serve::{self, HandshakeError, Mounted, Notifier, Readiness, Serve};

/// Runs `rfs mount`.
pub(crate) fn run(root: Option<PathBuf>, args: MountArgs) -> Result<ExitCode> {
    // The command line was checked when parsed; the fuse-overlayfs invocation builds
    // arguments of the same shape.
    let (source, mountpoint) = args.positionals().map_err(anyhow::Error::msg)?;
    let (source, mountpoint) = (source.map(Path::to_path_buf), mountpoint.to_path_buf());
    check_mountpoint(&mountpoint)?;
    // The root directory is needed only for image sources and a fresh upper; resolving it
    // lazily lets `mount -t fuse.rfs` (which runs us with an empty environment) mount
    // explicit lower/upper dirs.
    let needs_root = source.is_some() || (!args.read_only && args.upper.is_none());
    let root = if needs_root {
        super::root_dir(root)?
    } else {
        root.unwrap_or_default()
    };
    // A reference pulled (or a short name found under a search registry) is opened by ID.
    let source = match source {
        Some(source) => Some(
            super::store::pull::pull_if_missing(&root, &source, args.platform.as_deref())?
                .map_or(source, PathBuf::from),
        ),
        None => None,
    };
    if args.foreground {
        return mount_and_serve(&root, source.as_deref(), &mountpoint, &args, None);
    }
    daemonize(&root, source.as_deref(), &mountpoint, &args)
}

fn check_mountpoint(m: &Path) -> Result<()> {
    let meta = match std::fs::metadata(m) {
        Ok(meta) => meta,
        // What a killed FUSE daemon leaves: still mounted, but every access fails.
        Err(e) if crate::mountinfo::is_dead_mount(&e) => bail!(
            "mountpoint {0}: a dead mount is there, whose FUSE daemon is gone ({e}); \
             `rfs umount {0}` clears it",
            m.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("mountpoint {}", m.display())),
    };
    if !meta.is_dir() {
        bail!("mountpoint {}: not a directory", m.display());
    }
    let canon = std::fs::canonicalize(m)?;
    if mountinfo::top_at(&canon).is_some() {
        bail!(
            "mountpoint {}: busy (something is mounted there already)",
            m.display()
        );
    }
    Ok(())
}

/// Forks before any thread exists: the child mounts and serves; the parent waits for the
/// child's [`Readiness`] and exits accordingly.
fn daemonize(
    root: &Path,
    source: Option<&Path>,
    mountpoint: &Path,
    args: &MountArgs,
) -> Result<ExitCode> {
    let (notifier, waiter) = serve::handshake()?;
    // rfs is single-threaded here (a pull runs as a child process), which the fork checks.
    match rfs_runner::syscall::fork_single_threaded().context("fork")? {
        rfs_runner::syscall::Forked::Parent(_) => {
            drop(notifier);
            match waiter.wait() {
                Ok(Readiness::Ready { notice }) => {
                    eprint!("{notice}");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(Readiness::Failed { reason }) => Err(anyhow::Error::msg(reason)),
                Err(HandshakeError::Closed) => {
                    bail!("the rfs daemon exited before the mount was ready")
                }
                Err(e) => bail!("the rfs daemon: {e}"),
            }
        }
        rfs_runner::syscall::Forked::Child => {
            drop(waiter);
            let _ = nix::unistd::setsid();
            // Errors before "ready" went to the parent through the pipe; later ones are logged.
            let code = match mount_and_serve(root, source, mountpoint, args, Some(notifier)) {
                Ok(_) => 0,
                Err(e) => {
                    log::debug!("{e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// A mount that is ready, and what to tell the user about it.
struct Started {
    mounted: Mounted,
    /// The fresh writable layer made for it; it goes when dropped unless mounted.
    fresh: Option<MountLayer>,
    notice: String,
}

/// Builds the filesystem, mounts it, tells whoever waits (`ready`, or the terminal in the
/// foreground), and serves until unmounted or signalled.
fn mount_and_serve(
    root: &Path,
    source: Option<&Path>,
    mountpoint: &Path,
    args: &MountArgs,
    ready: Option<Notifier>,
) -> Result<ExitCode> {
    serve::tune_memory();
    let what = source.map_or_else(|| "lower dirs".to_string(), |s| s.display().to_string());
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    let started = start(root, source, mountpoint, args, &what, &signals)
        .with_context(|| format!("mounting {what} on {}", mountpoint.display()));
    let Started {
        mounted,
        fresh,
        notice,
    } = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some(ready) = ready {
                ready.send(&Readiness::Failed {
                    reason: format!("{e:#}"),
                });
            }
            return Err(e);
        }
    };
    match ready {
        Some(ready) => ready.send(&Readiness::Ready {
            notice: notice.clone(),
        }),
        None => eprint!("{notice}"),
    }
    // Daemon: stop writing to the caller's terminal.
    if !args.foreground {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
            if std::env::var_os("RFS_LOG").is_none() {
                let _ = nix::unistd::dup2_stderr(&null);
            }
        }
    }
    mounted.serve_until_unmounted(signals, &|msg| say(args, msg));
    if let Some(layer) = fresh {
        let dir = layer.dir().to_owned();
        match layer.finish() {
            Ok(Finished::Removed(_)) => {
                say(
                    args,
                    &format!("rfs: deleted the writable layer {}", dir.display()),
                );
            }
            Ok(Finished::Kept) => {}
            Err(e) => say(args, &format!("rfs: {e}")),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything up to a mount that is ready: the layers, the upper (a fresh one made here is
/// deleted if this fails: it is dropped), the union, the mount, the fresh layer's record.
fn start(
    root: &Path,
    source: Option<&Path>,
    mountpoint: &Path,
    args: &MountArgs,
    what: &str,
    signals: &SigSet,
) -> Result<Started> {
    // The daemon keeps its working directory, but the absolute path is what the layer's
    // record names.
    let abs = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let ids = shown_ids(args)?;
    let layers = match (source, &args.lower) {
        (_, Some(lower)) => lower_dirs(lower)?,
        (Some(src), None) => crate::commands::image_layers(root, src, args.platform.as_deref())?,
        (None, None) => bail!("nothing to mount"),
    };
    // One xattr namespace for the overlay markers, the upper's and those followed in
    // directory lowers (kernel `userxattr`): what the mount says, else what this process
    // may use.
    let markers = if args.userxattr || !rfs_fs::sys::is_initial_root() {
        Namespace::User
    } else {
        Namespace::Trusted
    };
    let lower = LowerTree::build_with_markers(layers, markers)?;
    let mut notice = String::new();
    let mut fresh = None;
    let upper = if args.read_only {
        None
    } else {
        Some(match (&args.upper, &args.work) {
            (Some(u), Some(w)) => UpperDirs {
                upper: u.clone(),
                work: w.clone(),
            },
            _ => {
                let layer = fresh_layer(root, source, args, &abs)?;
                notice = format!(
                    "rfs: writable layer in {}{}\n",
                    layer.upper().display(),
                    if args.rm {
                        " (deleted at unmount: --rm)"
                    } else {
                        ""
                    }
                );
                let dirs = UpperDirs {
                    upper: layer.upper(),
                    work: layer.work(),
                };
                fresh = Some(layer);
                dirs
            }
        })
    };
    let built = Serve {
        lower,
        upper,
        config: UnionConfig {
            markers: Some(markers),
            ..UnionConfig::default()
        },
        mountpoint: mountpoint.to_owned(),
        options: MountOptions {
            fsname: format!("rfs:{what}"),
            allow_other: nix::unistd::geteuid().is_root(),
            read_only: args.read_only,
            threads: args.threads,
            ids,
            fsync: !args.no_fsync,
            passthrough: !args.no_passthrough && rfs_fs::sys::is_initial_root(),
        },
    }
    .build()?;
    // An image's root directory has an owner and mode that the fresh upper's root should
    // show; --lower directories keep the kernel's rule (the upper root's own attributes).
    if fresh.is_some() && args.lower.is_none() {
        built.union().adopt_lower_root_owner()?;
    }
    let mounted = built.mount(signals)?;
    if let Some(layer) = fresh.as_mut() {
        // The mount's identity, so `rfs umount --rm` finds this layer even once the daemon
        // is gone; the layer is kept from here on even if the record cannot be written.
        let device = mountinfo::top_at(mounted.absolute())
            .filter(mountinfo::MountEntry::is_rfs)
            .map(|e| e.device);
        if let Err(e) = layer.mounted(device) {
            log::warn!("recording the mount in {}: {e}", layer.dir().display());
        }
    }
    Ok(Started {
        mounted,
        fresh,
        notice,
    })
}

/// Tells the user: on stderr in the foreground, in the log for a daemon (whose stderr is
/// /dev/null unless `RFS_LOG` is set).
fn say(args: &MountArgs, msg: &str) {
    if args.foreground {
        eprintln!("{msg}");
    } else {
        log::warn!("{msg}");
    }
}

/// How the mount shows owners. Root (in any user namespace), `--keep-ids` and `--lower`
/// directories (whose owners are the host's own ids) show the ids on disk, or what the
/// fuse-overlayfs mapping options say. A mount of an image without root shows the image's
/// root as its caller: the kernel checks permissions against the ids the mount shows
/// (`default_permissions`), so otherwise every file of the image would be read-only to the
/// user who mounted it. What the caller creates is recorded as the image root's
/// (`override_stat`), so `rfs commit` writes what the image's root would have written.
fn shown_ids(args: &MountArgs) -> Result<rfs_fs::fuse::IdMapping> {
    use rfs_runner::userns::UsernsMapping;
    if args.keep_ids || args.lower.is_some() || nix::unistd::geteuid().is_root() {
        return Ok(args.ids.clone());
    }
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let mut ids = rfs_fs::fuse::IdMapping {
        uids: vec![(uid, 0, 1)],
        gids: vec![(gid, 0, 1)],
        ..Default::default()
    };
    if args.subids {
        match UsernsMapping::for_current_user().context("--subids")? {
            UsernsMapping::Ranges {
                sub_uid, sub_gid, ..
            } => {
                ids.uids.push((sub_uid.start, 1, sub_uid.count));
                ids.gids.push((sub_gid.start, 1, sub_gid.count));
            }
            _ => bail!(
                "--subids: user {uid} has no range in /etc/subuid and /etc/subgid \
                 (add one, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`)"
            ),
        }
    }
    Ok(ids)
}

/// `--lower a:b:c` (a on top) as layers bottom first.
fn lower_dirs(spec: &str) -> Result<Vec<LayerInput>> {
    let mut layers = Vec::new();
    for d in spec.split(':').rev() {
        if d.is_empty() {
            bail!("--lower: empty directory name in {spec:?}");
        }
        let p = std::fs::canonicalize(d).with_context(|| format!("lower dir {d}"))?;
        if !p.is_dir() {
            bail!("lower dir {d}: not a directory");
        }
        layers.push(LayerInput::Dir(p));
    }
    Ok(layers)
}

/// A fresh writable layer of the store for this mount (`root/mounts/<id>/`).
fn fresh_layer(
    root: &Path,
    source: Option<&Path>,
    args: &MountArgs,
    mountpoint: &Path,
) -> Result<MountLayer> {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .map_or_else(|_| p.display().to_string(), |c| c.display().to_string())
    };
    let what = match (&args.lower, source) {
        (Some(lower), _) => lower
            .split(':')
            .map(|d| absolute(Path::new(d)))
            .collect::<Vec<_>>()
            .join(":"),
        // A store reference is no path, and stays as written.
        (None, Some(src)) => absolute(src),
        (None, None) => String::new(),
    };
    let store = Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    store
        .create_mount_layer(&what, mountpoint, args.rm)
        .context("creating the writable layer")
}

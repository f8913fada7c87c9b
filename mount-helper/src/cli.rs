//! Command-line syntax (clap derive types). No I/O happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rfs: mount and run container images over a userspace union filesystem.
#[derive(Debug, Parser)]
#[command(name = "rfs", version, about, long_about = None)]
pub(crate) struct Cli {
    /// rfs's root directory for layers, indexes and uppers
    /// [default: $XDG_DATA_HOME/rfs or ~/.local/share/rfs]
    #[arg(long, global = true, env = "RFS_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Mount an image (docker save archive, OCI layout dir or tar, flat rootfs tar) or
    /// directories as lower layers, with a writable upper.
    Mount(MountArgs),
    /// Unmount an rfs mount (fusermount3 -u, falling back to a lazy unmount as root).
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Check this host for what rfs needs (/dev/fuse, fusermount3, user namespaces, subuid
    /// ranges, xattrs) and say what each missing piece costs.
    Doctor,
}

/// `rfs mount`.
#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// The image to mount; omit with --lower.
    #[arg(value_name = "SOURCE", required_unless_present = "lower")]
    pub(crate) source: Option<PathBuf>,
    /// Where to mount.
    #[arg(value_name = "MOUNTPOINT")]
    pub(crate) mountpoint: Option<PathBuf>,
    /// Lower directories, leftmost on top (as overlayfs lowerdir=).
    #[arg(long, value_name = "DIR[:DIR...]")]
    pub(crate) lower: Option<String>,
    /// The writable layer (default: a fresh one under the root directory).
    #[arg(long, value_name = "DIR", requires = "work")]
    pub(crate) upper: Option<PathBuf>,
    /// The upper's work dir, on the same filesystem.
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub(crate) work: Option<PathBuf>,
    /// Mount without an upper layer.
    #[arg(long, conflicts_with_all = ["upper", "work"])]
    pub(crate) read_only: bool,
    /// Image platform to pick from a multi-platform index (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Stay in the foreground; by default rfs returns once the mount is ready.
    #[arg(short, long)]
    pub(crate) foreground: bool,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub(crate) threads: usize,
    /// Id mapping and squashing (set by the fuse-overlayfs compatible invocation).
    #[arg(skip)]
    pub(crate) ids: rfs_fs::fuse::IdMapping,
    /// Make fsync a no-op (fuse-overlayfs `fsync=0`).
    #[arg(skip)]
    pub(crate) no_fsync: bool,
}

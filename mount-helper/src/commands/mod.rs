//! One module per subcommand; `run` dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command};

mod doctor;
mod mount;
mod umount;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Mount(args) => mount::run(cli.root, args),
        Command::Umount { mountpoint } => umount::run(&mountpoint),
        Command::Doctor => doctor::run(&root_dir(cli.root)?),
    }
}

/// `rfs mount` with arguments built elsewhere (the fuse-overlayfs compatible invocation).
pub(crate) fn mount_with(root: Option<PathBuf>, args: crate::cli::MountArgs) -> Result<ExitCode> {
    mount::run(root, args)
}

/// rfs's root directory: `--root`/`RFS_ROOT`, else `$XDG_DATA_HOME/rfs`, else
/// `~/.local/share/rfs`. Created if missing.
pub(crate) fn root_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let root = match explicit {
        Some(r) => r,
        None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("rfs"),
            None => {
                let home = std::env::var_os("HOME")
                    .context("neither --root, RFS_ROOT, XDG_DATA_HOME nor HOME is set")?;
                PathBuf::from(home).join(".local/share/rfs")
            }
        },
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating root directory {}", root.display()))?;
    std::fs::canonicalize(&root).with_context(|| format!("resolving {}", root.display()))
}

/// The layers of an image SOURCE, bottom first, indexed (and cached under `root`).
pub(crate) fn image_layers(
    root: &std::path::Path,
    source: &std::path::Path,
    platform: Option<&str>,
) -> Result<Vec<rfs_fs::lower::LayerInput>> {
    let progress = crate::progress::Progress::new();
    let report = |what: &str, done: u64, total: u64| progress.update(what, done, total);
    let opts = rfs_fs::source::SourceOptions {
        root,
        platform,
        progress: Some(&report),
    };
    // Library errors name the archive, member and layer already.
    let (_image, layers) = rfs_fs::source::open_layers(source, &opts)?;
    Ok(layers)
}

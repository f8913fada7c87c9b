//! The fuse-overlayfs compatible invocation, for tools that know how to drive it (podman and
//! buildah `mount_program`, `mount -t fuse.rfs`):
//!
//! ```text
//! rfs-overlay [-f] [-d] -o lowerdir=A:B,upperdir=U,workdir=W[,OPTION...] MOUNTPOINT
//! ```
//!
//! It is chosen when rfs is called as `rfs-overlay`, `fuse-overlayfs` or `mount.fuse.rfs`,
//! or when its first argument is `-o`. Options that change behaviour are implemented
//! (`lowerdir`, `upperdir`, `workdir`, `squash_to_root`, `squash_to_uid`, `squash_to_gid`,
//! `uidmapping`, `gidmapping`, `fsync=0`, `ro`, and kernel overlayfs's `userxattr`); options
//! that only tune fuse-overlayfs are accepted and ignored; anything else is an error naming
//! the option.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cli::MountArgs;

/// Options accepted for compatibility that need no action here: tuning knobs of
/// fuse-overlayfs, and generic mount options the kernel handles or that match rfs's defaults.
const IGNORED: &[&str] = &[
    "noacl",
    "volatile",
    "static_nlink",
    "ino32_t",
    "xattr_permissions",
    "noxattrs",
    "timeout",
    "threaded",
    "writeback",
    "plugins",
    "redirect_dir",
    "index",
    "metacopy",
    "rw",
    "dev",
    "suid",
    "exec",
    "nodev",
    "nosuid",
    "noexec",
    "noatime",
    "relatime",
    "allow_other",
    "allow_root",
    "default_permissions",
    "context",
    "fsync",
];

/// Whether this invocation uses the fuse-overlayfs syntax: by program name, by a leading
/// `-o`, or as `mount.fuse3` calls a `fuse.rfs` type (`rfs SOURCE MOUNTPOINT -o OPTIONS`,
/// where SOURCE is not a subcommand).
pub(crate) fn is_overlay_invocation(args: &[String]) -> bool {
    let prog = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    if matches!(prog, "rfs-overlay" | "fuse-overlayfs" | "mount.fuse.rfs") {
        return true;
    }
    let Some(first) = args.get(1) else {
        return false;
    };
    if first == "-o" {
        return true;
    }
    use clap::CommandFactory;
    let is_subcommand = crate::cli::Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    !first.starts_with('-') && !is_subcommand && args.iter().any(|a| a == "-o")
}

/// Parses the fuse-overlayfs syntax into `rfs mount` arguments.
pub(crate) fn parse(args: &[String]) -> Result<MountArgs> {
    let mut opts: Vec<String> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => match it.next() {
                Some(o) => opts.push(o.clone()),
                None => bail!("-o needs an option list"),
            },
            "-f" | "-d" | "--debug" => foreground = true,
            "-h" | "--help" => bail!(
                "usage: rfs-overlay [-f] -o lowerdir=A:B,upperdir=U,workdir=W[,...] MOUNTPOINT"
            ),
            s if s.starts_with("-o") => opts.push(s[2..].to_string()),
            s if s.starts_with('-') => bail!("unknown argument {s:?}"),
            s => positional.push(s.to_string()),
        }
    }
    // `mount -t fuse.rfs SOURCE MOUNTPOINT -o ...` passes the source first.
    let mountpoint = match positional.as_slice() {
        [m] | [_, m] => PathBuf::from(m),
        _ => bail!("expected one MOUNTPOINT, got {positional:?}"),
    };
    let mut m = MountArgs {
        source: Some(mountpoint),
        mountpoint: None,
        lower: None,
        upper: None,
        work: None,
        read_only: false,
        rm: false,
        platform: None,
        foreground,
        threads: 4,
        // fuse-overlayfs shows the ids on disk unless uidmapping=/squash_to_* say otherwise.
        keep_ids: true,
        subids: false,
        ids: rfs_fs::fuse::IdMapping::default(),
        no_fsync: false,
        no_passthrough: false,
        userxattr: false,
    };
    for opt in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = |v: Option<&str>| -> Result<String> {
            v.map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("option {key} needs a value"))
        };
        match key {
            "lowerdir" => m.lower = Some(need(value)?),
            "upperdir" => m.upper = Some(need(value)?.into()),
            "workdir" => m.work = Some(need(value)?.into()),
            "ro" => m.read_only = true,
            "squash_to_root" => {
                m.ids.squash_uid = Some(0);
                m.ids.squash_gid = Some(0);
            }
            "squash_to_uid" => m.ids.squash_uid = Some(need(value)?.parse()?),
            "squash_to_gid" => m.ids.squash_gid = Some(need(value)?.parse()?),
            "uidmapping" => {
                m.ids.uids = rfs_fs::fuse::IdMapping::parse_ranges(&need(value)?)
                    .map_err(anyhow::Error::msg)?;
            }
            "gidmapping" => {
                m.ids.gids = rfs_fs::fuse::IdMapping::parse_ranges(&need(value)?)
                    .map_err(anyhow::Error::msg)?;
            }
            "fsync" if value == Some("0") => m.no_fsync = true,
            "userxattr" => m.userxattr = true,
            k if IGNORED.contains(&k) => log::debug!("ignoring fuse-overlayfs option {opt}"),
            _ => bail!("unknown option {opt:?} (rfs-overlay accepts fuse-overlayfs's options)"),
        }
    }
    if m.lower.is_none() {
        bail!("missing lowerdir=");
    }
    if m.upper.is_some() != m.work.is_some() {
        bail!("upperdir= and workdir= go together");
    }
    if m.upper.is_none() {
        m.read_only = true;
    }
    Ok(m)
}

/// Runs the fuse-overlayfs compatible invocation.
pub(crate) fn run(root: Option<PathBuf>, args: &[String]) -> Result<ExitCode> {
    let m = parse(args)?;
    crate::commands::mount_with(root, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn podman_style_invocation_parses() {
        let a = v(&[
            "/usr/bin/rfs-overlay",
            "-o",
            "lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w,fsync=0,noacl,uidmapping=0:1000:1,gidmapping=0:1000:1",
            "/mnt",
        ]);
        assert!(is_overlay_invocation(&a));
        let m = parse(&a).unwrap();
        assert_eq!(m.lower.as_deref(), Some("/l/a:/l/b"));
        assert_eq!(m.upper, Some(PathBuf::from("/u")));
        assert!(m.no_fsync);
        assert_eq!(m.ids.uid_out(1000), 0);
        assert_eq!(m.source, Some(PathBuf::from("/mnt")));
        assert!(!m.read_only);
        assert!(!m.userxattr);
        let a = v(&["rfs-overlay", "-o", "lowerdir=/a,userxattr", "/mnt"]);
        assert!(parse(&a).unwrap().userxattr, "kernel overlayfs's option");
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let a = v(&["rfs-overlay", "-o", "lowerdir=/a,frobnicate=1", "/mnt"]);
        let e = parse(&a).unwrap_err().to_string();
        assert!(e.contains("frobnicate"), "{e}");
        let a = v(&["rfs", "-o", "upperdir=/u,workdir=/w", "/mnt"]);
        assert!(parse(&a).unwrap_err().to_string().contains("lowerdir"));
    }

    #[test]
    fn no_upper_means_read_only_and_mount_helper_form_works() {
        let a = v(&[
            "mount.fuse.rfs",
            "rfs",
            "/mnt",
            "-o",
            "lowerdir=/a,squash_to_root",
        ]);
        let m = parse(&a).unwrap();
        assert!(m.read_only);
        assert_eq!(m.ids.uid_out(42), 0);
        assert_eq!(m.source, Some(PathBuf::from("/mnt")));
    }
}

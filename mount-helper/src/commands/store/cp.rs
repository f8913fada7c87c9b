//! `rfs cp [-L] CONTAINER:SRC DEST` and `rfs cp [-L] SRC CONTAINER:DEST`: files between the
//! host and a container, with `docker cp`'s rules for where they land. A stopped container's
//! union is opened in this process (no mount); paths in it resolve inside it (`rfs_fs::cp`),
//! so no symlink of the container leads anywhere on the host. A running one is copied through
//! its own mount by a process that joined it (`super::cp_live`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rfs_fs::lower::FileKind;
use rfs_fs::union::Caller;

use crate::cli::CpArgs;

/// One side of `rfs cp`: a host path, or a path in a container.
#[derive(Debug, PartialEq)]
enum Side {
    Host(PathBuf),
    Container { key: String, path: String },
}

/// `NAME:PATH` names a container's path; a host path with a `:` is written `./a:b`, as with
/// docker.
fn side(text: &str) -> Side {
    match text.split_once(':') {
        Some((key, path)) if !key.is_empty() && !key.contains('/') && !text.starts_with('.') => {
            Side::Container {
                key: key.to_owned(),
                path: path.to_owned(),
            }
        }
        _ => Side::Host(PathBuf::from(text)),
    }
}

/// Whether `path` asks for a directory's contents rather than the directory (`dir/.`).
fn contents_only(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// Runs `rfs cp`.
pub(crate) fn run(root: Option<PathBuf>, args: &CpArgs) -> Result<ExitCode> {
    let (src, dest) = (side(&args.src), side(&args.dest));
    let store = super::open(root)?;
    let open = |key: &str| {
        let c = super::Container::find(store.root(), key)?
            .with_context(|| format!("no such container: {key}"))?;
        let union = c.union(&store)?;
        anyhow::Ok((c, union))
    };
    // A running container: through its own mount, by a process that joins it.
    let running = |key: &str| -> Result<Option<i32>> {
        let containers = rfs_runner::state::ContainerStore::new(store.root());
        match containers.find(key)? {
            Some(c) if c.is_running() => {
                let sandbox = c.pid.unwrap_or_default();
                let init = rfs_runner::exec::init_of(sandbox)?;
                rfs_runner::exec::wait_until_set_up(init)?;
                Ok(Some(init))
            }
            _ => Ok(None),
        }
    };
    match (&src, &dest) {
        (Side::Container { key, path }, Side::Host(dest)) => {
            if let Some(init) = running(key)? {
                super::cp_live::copy_out(init, path, args.follow_link, dest)
                    .with_context(|| format!("copying {key}:{path} to {}", dest.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        (Side::Host(src), Side::Container { key, path }) => {
            if let Some(init) = running(key)? {
                super::cp_live::copy_in(init, src, path)
                    .with_context(|| format!("copying {} to {key}:{path}", src.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        _ => {}
    }
    match (src, dest) {
        (Side::Container { key, path }, Side::Host(dest)) => {
            let (c, union) = open(&key)?;
            let at = |e| anyhow::Error::new(e).context(format!("{}:{path}", c.state.name));
            let attr =
                rfs_fs::cp::resolve(&union, path.as_bytes(), args.follow_link).map_err(at)?;
            let target = host_target(&dest, &path, attr.kind == FileKind::Dir)?;
            let copied = rfs_fs::cp::copy_out(&union, &attr, &target).with_context(|| {
                format!("copying {}:{path} to {}", c.state.name, target.display())
            })?;
            log::info!("copied {} entries, {} bytes", copied.entries, copied.bytes);
        }
        (Side::Host(src), Side::Container { key, path }) => {
            let (c, union) = open(&key)?;
            let md = std::fs::symlink_metadata(&src)
                .with_context(|| format!("reading {}", src.display()))?;
            let src_text = src.to_string_lossy();
            let copied = match rfs_fs::cp::resolve(&union, path.as_bytes(), true) {
                // Into an existing directory: as its entry named like SRC, or SRC's
                // contents with `SRC/.`.
                Ok(dir) if dir.kind == FileKind::Dir => {
                    if contents_only(&src_text) && md.is_dir() {
                        let mut copied = rfs_fs::cp::Copied::default();
                        for e in std::fs::read_dir(&src)
                            .with_context(|| format!("reading {}", src.display()))?
                        {
                            let e = e.with_context(|| format!("reading {}", src.display()))?;
                            let c = rfs_fs::cp::copy_in(
                                &union,
                                &e.path(),
                                dir.ino,
                                e.file_name().as_bytes(),
                                Caller::ROOT,
                            )?;
                            copied.entries += c.entries;
                            copied.bytes += c.bytes;
                        }
                        Ok(copied)
                    } else {
                        let name = src.file_name().with_context(|| {
                            format!("{}: no file name to copy as", src.display())
                        })?;
                        rfs_fs::cp::copy_in(&union, &src, dir.ino, name.as_bytes(), Caller::ROOT)
                    }
                }
                Ok(_) if md.is_dir() => bail!(
                    "cannot copy directory {} over the file {}:{path}",
                    src.display(),
                    c.state.name
                ),
                Ok(_) | Err(rfs_fs::Error::NotFound) => {
                    if path.ends_with('/') {
                        bail!("{}:{path}: no such directory", c.state.name);
                    }
                    let (parent, name) = rfs_fs::cp::resolve_parent(&union, path.as_bytes())
                        .with_context(|| format!("{}:{path}", c.state.name))?
                        .with_context(|| format!("{}:{path}: not a file name", c.state.name))?;
                    rfs_fs::cp::copy_in(&union, &src, parent.ino, &name, Caller::ROOT)
                }
                Err(e) => Err(e),
            }
            .with_context(|| format!("copying {} to {}:{path}", src.display(), c.state.name))?;
            log::info!("copied {} entries, {} bytes", copied.entries, copied.bytes);
        }
        (Side::Container { .. }, Side::Container { .. }) => {
            bail!("copying between containers is not supported; copy through the host")
        }
        (Side::Host(_), Side::Host(_)) => {
            bail!("one of SRC and DEST must be CONTAINER:PATH (use cp for host files)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a copy of the container path `src` goes for the host DEST `dest`: into an existing
/// directory under `src`'s name, else `dest` itself (whose parent must exist).
fn host_target(dest: &Path, src: &str, src_is_dir: bool) -> Result<PathBuf> {
    match std::fs::symlink_metadata(dest) {
        Ok(md) if md.is_dir() || (md.file_type().is_symlink() && dest.is_dir()) => {
            if contents_only(src) {
                return Ok(dest.to_owned());
            }
            let name = Path::new(src.trim_end_matches('/'))
                .file_name()
                .map(Path::new)
                .unwrap_or(Path::new(""));
            if name.as_os_str().is_empty() {
                // The container's root: its contents.
                return Ok(dest.to_owned());
            }
            Ok(dest.join(name))
        }
        Ok(_) if src_is_dir => bail!("cannot copy a directory over the file {}", dest.display()),
        Ok(_) => Ok(dest.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dest.as_os_str().as_bytes().ends_with(b"/") {
                bail!("{}: no such directory", dest.display());
            }
            Ok(dest.to_owned())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dest.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_are_name_colon_path() {
        assert_eq!(
            side("web:/etc/passwd"),
            Side::Container {
                key: "web".into(),
                path: "/etc/passwd".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(side("/tmp/a:b"), Side::Host("/tmp/a:b".into()));
        assert_eq!(side("plain"), Side::Host("plain".into()));
        assert!(contents_only("/srv/."));
        assert!(!contents_only("/srv"));
    }
}

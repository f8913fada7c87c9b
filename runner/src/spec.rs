//! [`RunSpec`]: everything the container's init needs to know, as plain data. The CLI builds
//! it from the image config and the command line, writes it as JSON, and the init process
//! reads it back, so it crosses the `exec` of a fresh process image unchanged.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to run and how the container looks from inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The container's root, already mounted (an rfs union, a kernel overlay, a directory).
    pub rootfs: PathBuf,
    /// The command and its arguments; `argv[0]` is looked up in the container's `PATH`.
    pub argv: Vec<String>,
    /// The environment, `KEY=VALUE`, in order.
    pub env: Vec<String>,
    /// The working directory inside the container (created if missing, as docker does).
    pub cwd: PathBuf,
    /// `USER[:GROUP]`, names or numbers, resolved in the container's `/etc/passwd` and
    /// `/etc/group`; empty for root.
    pub user: String,
    /// The host name in the new UTS namespace.
    pub hostname: String,
    /// Bind mounts, in order: generated `/etc` files and volumes.
    pub binds: Vec<BindMount>,
    /// The network set-up.
    pub network: Network,
    /// Make the root read-only once the mountpoints exist.
    pub read_only_rootfs: bool,
    /// Standard input is a terminal the command should get as its controlling terminal.
    pub tty: bool,
    /// Only root is mapped in the user namespace: other users are squashed to root and
    /// `setgroups` is denied.
    pub single_id: bool,
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// The host file or directory.
    pub source: PathBuf,
    /// The absolute path inside the container (symlinks resolved inside the container).
    pub target: PathBuf,
    /// Mount it read-only.
    pub read_only: bool,
}

/// The network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network.
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
    /// A new network namespace of its own, connected to the outside by a userspace network
    /// stack (`pasta`) that the caller starts once the namespace exists.
    Private,
}

impl Network {
    /// Whether the container gets a network namespace of its own.
    pub fn is_own(self) -> bool {
        self != Network::Host
    }
}

impl RunSpec {
    /// Reads a spec written by [`RunSpec::write`].
    ///
    /// # Errors
    /// The file cannot be read or is not a spec.
    pub fn read(path: &std::path::Path) -> crate::Result<RunSpec> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::State {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::read_from(file, path)
    }

    /// Reads a spec written by [`RunSpec::write`] from `file`, an open file that errors name
    /// as `name`.
    ///
    /// # Errors
    /// The file cannot be read or is not a spec.
    pub fn read_from(
        mut file: impl std::io::Read,
        name: &std::path::Path,
    ) -> crate::Result<RunSpec> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| crate::Error::State {
                path: name.to_path_buf(),
                source: e,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| crate::Error::State {
            path: name.to_path_buf(),
            source: e.into(),
        })
    }

    /// Writes the spec as JSON to `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> crate::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| crate::Error::State {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        std::fs::write(path, json).map_err(|e| crate::Error::State {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

//! The runner's error type: one variant per setup step, each naming the path or ids involved
//! and keeping the kernel's errno as its source. Messages are lowercase and do not repeat the
//! source's text; the CLI prints the chain.

use std::path::PathBuf;

/// Why starting or running a container failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process has more than one thread, so it may not fork or create a user namespace.
    #[error("the process has {threads} threads; namespaces must be set up while single-threaded")]
    MultiThreaded {
        /// How many threads `/proc/self/task` lists.
        threads: usize,
    },
    /// `fork(2)` failed.
    #[error("fork")]
    Fork(#[source] nix::Error),
    /// `unshare(2)` failed.
    #[error("unshare({flags})")]
    Unshare {
        /// The namespaces asked for, as `USER|NS|…`.
        flags: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// User namespaces cannot be created here (disabled by a sysctl or a security module).
    #[error("user namespaces are not available: {reason}")]
    UserNamespacesUnavailable {
        /// What is off and how to turn it on.
        reason: String,
    },
    /// `/etc/subuid` has a range for the user but `newuidmap`/`newgidmap` are missing.
    #[error(
        "{user} has a range in {ranges_file} but {tool} is not installed: install the `uidmap` \
         package, or remove the range to run with a single id mapping"
    )]
    MissingIdMapTool {
        /// The user name.
        user: String,
        /// `/etc/subuid` or `/etc/subgid`.
        ranges_file: PathBuf,
        /// `newuidmap` or `newgidmap`.
        tool: &'static str,
    },
    /// Writing `/proc/<pid>/{uid_map,gid_map,setgroups}` failed.
    #[error("writing {path} ({content:?})")]
    WriteIdMap {
        /// The file.
        path: PathBuf,
        /// What was written.
        content: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap`/`newgidmap` failed.
    #[error("{tool} {args}: {stderr}")]
    IdMapTool {
        /// The tool.
        tool: String,
        /// Its arguments.
        args: String,
        /// What it printed (or how it could not be started).
        stderr: String,
    },
    /// A pipe between the setup processes failed or closed early.
    #[error("talking to the {peer} process")]
    Sync {
        /// The process on the other side.
        peer: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox process reported a failure before the container started.
    #[error("{0}")]
    Sandbox(String),
    /// `mount(2)` failed.
    #[error("mount {what} on {target}")]
    Mount {
        /// A short description (`proc`, `bind /dev/null`, `remount read-only`, …).
        what: String,
        /// The mountpoint.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `umount2(2)` failed.
    #[error("unmount {target}")]
    Umount {
        /// The mountpoint.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `pivot_root(2)` failed.
    #[error("pivot_root into {new_root}")]
    PivotRoot {
        /// The new root.
        new_root: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Joining a namespace (or the root) of a running container's init failed.
    #[error("joining the {what} of the container's init (pid {pid})")]
    Join {
        /// `user namespace`, `root`, ...
        what: &'static str,
        /// The init's pid.
        pid: i32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `chroot(2)` failed.
    #[error("chroot into {new_root}")]
    Chroot {
        /// The new root.
        new_root: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// After pivoting, `/` is not the container's root.
    #[error("the host root is still visible after pivot_root into {new_root}")]
    HostRootVisible {
        /// The container's root.
        new_root: PathBuf,
    },
    /// `stat(2)` of a root failed.
    #[error("stat {path}")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `chdir(2)` failed.
    #[error("chdir {path}")]
    Chdir {
        /// The directory.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `sethostname(2)` failed.
    #[error("sethostname {hostname:?}")]
    Sethostname {
        /// The name.
        hostname: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Bringing up the loopback interface failed.
    #[error("bringing up the loopback interface")]
    LoopbackUp(#[source] nix::Error),
    /// `setgroups(2)` failed.
    #[error("setgroups {groups:?}")]
    Setgroups {
        /// The supplementary groups.
        groups: Vec<u32>,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `setresgid(2)` failed.
    #[error("setresgid {gid}")]
    Setresgid {
        /// The group id.
        gid: u32,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `setresuid(2)` failed.
    #[error("setresuid {uid}")]
    Setresuid {
        /// The user id.
        uid: u32,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// `prctl(2)` failed.
    #[error("prctl {what}")]
    Prctl {
        /// Which setting.
        what: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Marking inherited fds close-on-exec failed.
    #[error("marking inherited file descriptors close-on-exec")]
    CloseFds(#[source] nix::Error),
    /// A user or group name is not in the container's `/etc/passwd` or `/etc/group`.
    #[error("unable to find {kind} {name:?} in the container's {file}")]
    UnknownId {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
    },
    /// A path inside the container could not be resolved or created.
    #[error("{op} {path} in the container")]
    ContainerPath {
        /// What was attempted.
        op: &'static str,
        /// The path inside the container.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Starting the command failed.
    #[error("starting {program:?}")]
    Exec {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or signalling a process failed.
    #[error("{op} process {pid}")]
    Process {
        /// What was attempted.
        op: &'static str,
        /// The process id.
        pid: i32,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Blocking or waiting for signals failed.
    #[error("signal handling")]
    Signals(#[source] nix::Error),
    /// Setting up the pseudo-terminal failed.
    #[error("pseudo-terminal: {op}")]
    Pty {
        /// What was attempted.
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Reading or writing container state failed.
    #[error("container state {path}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The runner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

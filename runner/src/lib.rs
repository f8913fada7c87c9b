//! rfs-runner runs a command in a container whose root is an already-mounted path: an rfs
//! union, a kernel overlay or a plain directory. It knows nothing of images or filesystems.
//!
//! # The steps
//!
//! 1. The caller, single-threaded, forks the *sandbox* ([`process::spawn_sandbox`]), which
//!    unshares user, mount, uts, ipc and optionally network namespaces; the caller writes
//!    its id maps ([`userns::UsernsMapping`]: identity for root, `newuidmap` ranges from
//!    `/etc/subuid`, or a single mapping). The sandbox makes every mount private and runs the
//!    caller's code — rfs mounts the union there, so its FUSE server runs in the container's
//!    user namespace — then unshares the pid namespace ([`process::unshare_pid`]) and starts
//!    the init as a fresh program.
//! 2. The init ([`process::init`]) is pid 1. It resolves the user in the container's
//!    `/etc/passwd`, makes `/` rslave, binds the root onto itself, mounts `/proc`, a tmpfs
//!    `/dev` with the host's null, zero, full, random, urandom and tty bound in, devpts,
//!    `/dev/shm`, `/sys` read-only where allowed, and the bind mounts of the [`RunSpec`]
//!    ([`mounts`]); sets the host name, brings up `lo` in its own network namespace,
//!    `pivot_root`s and detaches the old root ([`pivot`]), sets `no_new_privs`, drops to the
//!    user, starts the command and waits as its init, reaping and forwarding signals.
//!
//! # What the container sees
//!
//! Its root and the mounts above; no path to the host's root (the old root is unmounted, not
//! just hidden), the host's devices only as the six harmless ones, its own pids, host name,
//! IPC and, with [`spec::Network::None`], its own network. Capabilities are those of root in
//! a user namespace: nothing outside it.
//!
//! # Testing without root
//!
//! Every system call goes through [`syscall::Syscall`]; [`syscall::Recording`] writes the
//! calls down instead, so the order of the steps is a unit test:
//!
//! ```
//! use rfs_runner::process::{enter_namespaces, make_mounts_private};
//! use rfs_runner::spec::Network;
//! use rfs_runner::syscall::Recording;
//!
//! let sys = Recording::new();
//! enter_namespaces(Network::None, &sys).unwrap();
//! make_mounts_private(&sys).unwrap();
//! assert_eq!(sys.calls()[0], "unshare(USER|NS|UTS|IPC|NET)");
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
pub mod error;
pub mod exec;
pub mod image_config;
pub mod mounts;
pub mod pivot;
pub mod process;
pub mod spec;
pub mod state;
pub mod syscall;
pub mod tty;
pub mod user;
pub mod userns;

pub use error::{Error, Result};
pub use spec::RunSpec;

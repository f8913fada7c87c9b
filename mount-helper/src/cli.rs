//! Command-line syntax (clap derive types), and the few rules about it that clap's derive
//! cannot state (which positionals `rfs mount` and `rfs commit` take depends on their
//! options). No I/O happens here.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

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

impl Cli {
    /// Parses the command line; bad usage prints clap's message with the subcommand's usage
    /// and exits with status 2, as clap does for the rules it checks itself.
    pub(crate) fn parse_checked() -> Cli {
        let cli = Cli::parse();
        let problem = match &cli.command {
            Command::Mount(args) => args.positionals().err().map(|p| ("mount", p)),
            Command::Commit(args) => args.positionals().err().map(|p| ("commit", p)),
            _ => None,
        };
        if let Some((name, problem)) = problem {
            usage_error(name, problem).exit();
        }
        cli
    }
}

/// A usage error of subcommand `name`, worded and printed as clap's own.
fn usage_error(name: &str, problem: &str) -> clap::Error {
    let mut cmd = Cli::command();
    // Building sets the subcommands' bin names, so the usage line reads `rfs mount ...`.
    cmd.build();
    match cmd.find_subcommand_mut(name) {
        Some(sub) => sub.error(clap::error::ErrorKind::WrongNumberOfValues, problem),
        None => cmd.error(clap::error::ErrorKind::InvalidSubcommand, problem),
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Mount an image (docker save archive, OCI layout dir or tar, flat rootfs tar) or
    /// directories as lower layers, with a writable upper.
    #[command(
        override_usage = "rfs mount [OPTIONS] SOURCE MOUNTPOINT\n       rfs mount [OPTIONS] --lower DIR[:DIR...] MOUNTPOINT",
        after_help = "Examples:\n  rfs mount busybox.tar /mnt/bb\n  rfs mount --lower /srv/top:/srv/base --upper /srv/up --work /srv/work /mnt/merged\n  rfs mount --read-only --platform linux/arm64/v8 ./oci-dir /mnt/arm\n  rfs mount rfs/busybox:latest /mnt/bb        (an image of the store)\n  rfs mount --rm busybox.tar /mnt/bb          (its writable layer goes at unmount)"
    )]
    Mount(MountArgs),
    /// Unmount an rfs mount; a busy one (a process works inside) is detached lazily and goes
    /// away when its last user leaves.
    #[command(
        after_help = "Examples:\n  rfs umount /mnt/bb\n  rfs umount --rm /mnt/bb      (and delete its fresh writable layer)"
    )]
    Umount(UmountArgs),
    /// List the writable layers that `rfs mount` made under the root directory, mounted or
    /// kept after their unmount.
    #[command(after_help = "Examples:\n  rfs mounts\n  rfs mounts --format json")]
    Mounts(MountsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:\n  rfs completions bash > /etc/bash_completion.d/rfs")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (rfs.1 and one per command) into a directory.
    #[command(after_help = "Examples:\n  rfs man /usr/local/share/man/man1")]
    Man {
        /// Where to write the pages.
        dir: PathBuf,
    },
    /// Check this host for what rfs needs (/dev/fuse, fusermount3, user namespaces, subuid
    /// ranges, xattrs) and say what each missing piece costs.
    #[command(after_help = "Examples:\n  rfs doctor")]
    Doctor,
    /// Show what rfs works with: the host, the kernel features it uses (and why not, if
    /// not), the store's root and use (images, layers, containers, mounts) and its version.
    #[command(after_help = "Examples:\n  rfs info\n  rfs info --format json")]
    Info(InfoArgs),
    /// Run a command in a new container over an image, rootless or as root.
    #[command(
        after_help = "Examples:\n  rfs run --rm busybox.tar\n  rfs run --rm -v \"$PWD\":/src -w /src busybox.tar ls\n  rfs run --name web -e FOO=1 -u app --net none debian.tar sh -c 'id'"
    )]
    Run(RunArgs),
    /// List containers (running ones; all with -a).
    #[command(after_help = "Examples:\n  rfs ps -a\n  rfs ps -a --format json")]
    Ps(PsArgs),
    /// Remove containers and their writable layers.
    #[command(after_help = "Examples:\n  rfs rm web\n  rfs rm -f web")]
    Rm(RmArgs),
    /// Stop running containers: their image's stop signal (SIGTERM by default), then
    /// SIGKILL after a grace period.
    #[command(after_help = "Examples:\n  rfs stop web\n  rfs stop -t 2 web db")]
    Stop(StopArgs),
    /// Start stopped containers again, with their writable layer as they left it.
    #[command(after_help = "Examples:\n  rfs start web\n  rfs start -a job")]
    Start(StartArgs),
    /// Stop containers, then start them again.
    #[command(after_help = "Examples:\n  rfs restart -t 2 web")]
    Restart(StopArgs),
    /// Send a signal to running containers (SIGKILL by default).
    #[command(after_help = "Examples:\n  rfs kill web\n  rfs kill -s HUP web")]
    Kill(KillArgs),
    /// Wait for containers to end; print each one's exit status.
    #[command(after_help = "Examples:\n  rfs wait web")]
    Wait(WaitArgs),
    /// List the ports a container publishes.
    #[command(after_help = "Examples:\n  rfs port web")]
    Port(PortArgs),
    /// List the processes of a running container.
    #[command(after_help = "Examples:\n  rfs top web")]
    Top(TopArgs),
    /// Show what a detached container wrote (stdout to stdout, stderr to stderr).
    #[command(after_help = "Examples:\n  rfs logs web\n  rfs logs -f --tail 20 -t web")]
    Logs(LogsArgs),
    /// Run a command in a running container.
    #[command(
        after_help = "Examples:\n  rfs exec web ps\n  rfs exec -u root -e DEBUG=1 -w /srv web sh -c 'ls'"
    )]
    Exec(ExecArgs),
    /// Load an image into the store from a docker save archive or an OCI layout (dir or tar).
    #[command(
        after_help = "Examples:\n  rfs load -i busybox-docker-archive.tar\n  rfs load -i ./busybox-oci"
    )]
    Load(LoadArgs),
    /// Make a one-layer image of a flat rootfs tar (as docker import).
    #[command(after_help = "Examples:\n  rfs import rootfs.tar myimage:1")]
    Import(ImportArgs),
    /// Give an image of the store another name.
    #[command(after_help = "Examples:\n  rfs tag rfs/busybox:latest bb:dev")]
    Tag(TagArgs),
    /// List the images of the store.
    #[command(after_help = "Examples:\n  rfs images\n  rfs images --format json")]
    Images(ImagesArgs),
    /// Remove images (or names of images) from the store.
    #[command(after_help = "Examples:\n  rfs rmi bb:dev")]
    Rmi(RmiArgs),
    /// Delete the blobs and caches of the store that nothing uses (and, with --mounts, the
    /// writable layers of `rfs mount` that are no longer mounted).
    #[command(
        after_help = "Examples:\n  rfs prune\n  rfs prune --mounts\n  rfs prune --build-cache"
    )]
    Prune(PruneArgs),
    /// Manage `rfs build`'s cache (`rfs builder prune`, as docker's).
    #[command(after_help = "Examples:\n  rfs builder prune")]
    Builder(BuilderArgs),
    /// Show the history of an image.
    #[command(
        after_help = "Examples:\n  rfs history rfs/busybox:latest --no-trunc\n  rfs history rfs/busybox:latest --format json"
    )]
    History(HistoryArgs),
    /// Show images or containers as JSON, with docker's field names.
    #[command(after_help = "Examples:\n  rfs inspect rfs/busybox:latest\n  rfs inspect web")]
    Inspect(InspectArgs),
    /// List the files a container (or an upper directory) added, changed or deleted.
    #[command(
        after_help = "Examples:\n  rfs diff web\n  rfs diff --image busybox.tar /path/to/upper"
    )]
    Diff(DiffArgs),
    /// Make an image of a container's (or an upper directory's) changes.
    #[command(
        override_usage = "rfs commit [OPTIONS] CONTAINER [NAME[:TAG]]\n       rfs commit [OPTIONS] --upper DIR --image IMAGE [NAME[:TAG]]",
        after_help = "Examples:\n  rfs commit web bb:next -m 'my change' -c 'CMD [\"sh\"]'"
    )]
    Commit(CommitArgs),
    /// Build an image from a Dockerfile, each RUN in a sandbox, each step a layer.
    #[command(
        after_help = "Examples:\n  rfs build -t app:1 .\n  rfs build -t app:dev -f Dockerfile.dev --build-arg V=2 --target build ."
    )]
    Build(BuildArgs),
    /// Write images of the store to a docker or OCI archive.
    #[command(after_help = "Examples:\n  rfs save bb:next -o bb.tar --format oci")]
    Save(SaveArgs),
    /// Write a container's filesystem (its merged view) as a tar archive.
    #[command(after_help = "Examples:\n  rfs export web -o web.tar\n  rfs export web | tar -t")]
    Export(ExportArgs),
    /// Copy files between a stopped container and the host.
    #[command(
        override_usage = "rfs cp [OPTIONS] CONTAINER:SRC DEST\n       rfs cp [OPTIONS] SRC CONTAINER:DEST",
        after_help = "Examples:\n  rfs cp web:/etc/nginx/nginx.conf .\n  rfs cp ./site/. web:/srv/www"
    )]
    Cp(CpArgs),
    /// Pull an image from a registry into the store.
    #[command(
        after_help = "Examples:\n  rfs pull debian:12\n  rfs pull registry.example.com:5000/team/app:v1\n  rfs pull --platform linux/arm64 localhost:5000/multi"
    )]
    Pull(PullArgs),
    /// Push an image of the store to a registry.
    #[command(
        after_help = "Examples:\n  rfs push bb:next registry.example.com/team/bb:next\n  rfs push --compression zstd localhost:5000/app:v2"
    )]
    Push(PushArgs),
    /// Log in to a registry: check the credentials and store them in auth.json.
    #[command(
        after_help = "Examples:\n  rfs login registry.example.com\n  echo \"$PASS\" | rfs login -u alice --password-stdin registry.example.com:5000"
    )]
    Login(LoginArgs),
    /// Remove the stored credentials of a registry (or of all, with --all).
    #[command(after_help = "Examples:\n  rfs logout registry.example.com\n  rfs logout --all")]
    Logout(LogoutArgs),
}

/// How to reach a registry (podman's options).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct RegistryArgs {
    /// Require HTTPS with verified certificates for registries not on this machine
    /// (--tls-verify=false: accept any certificate, and plain HTTP)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) tls_verify: Option<bool>,
    /// A directory with the registry's CA (*.crt) and client certificate (*.cert, *.key)
    /// [default: /etc/containers/certs.d/HOST[:PORT]]
    #[arg(long, value_name = "DIR")]
    pub(crate) cert_dir: Option<PathBuf>,
}

/// `rfs pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The image: [REGISTRY[:PORT]/]NAME[:TAG|@DIGEST] (docker.io by default).
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Image platform to pick from a multi-platform index (os/arch[/variant]).
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    pub(crate) platform: Option<String>,
    /// Pull every platform of a multi-platform index: the name goes to this machine's
    /// platform (else the first), the others are stored without a name.
    #[arg(long)]
    pub(crate) all_platforms: bool,
    /// Print one line per layer instead of progress bars, then the image ID.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// Layer compression for `rfs push`.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub(crate) enum PushCompression {
    /// gzip (what every registry and client reads).
    Gzip,
    /// zstd (smaller and faster; needs a recent client to pull).
    Zstd,
    /// Uncompressed layers.
    None,
}

/// `rfs push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The image of the store: NAME[:TAG] or ID.
    #[arg(value_name = "IMAGE")]
    pub(crate) image: String,
    /// Where to push: [REGISTRY[:PORT]/]NAME[:TAG] (default: IMAGE's name).
    #[arg(value_name = "REF")]
    pub(crate) destination: Option<String>,
    /// Compression of the layers rfs compresses itself.
    #[arg(long, value_enum, default_value = "gzip")]
    pub(crate) compression: PushCompression,
    /// Print one line per layer instead of progress bars.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// `rfs login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The registry: HOST[:PORT].
    #[arg(value_name = "REGISTRY")]
    pub(crate) registry: String,
    /// The user name (asked on a terminal if not given).
    #[arg(short, long, value_name = "USER")]
    pub(crate) username: Option<String>,
    /// Read the password from standard input (otherwise it is asked, without echo, on a
    /// terminal; never give it as an argument).
    #[arg(long)]
    pub(crate) password_stdin: bool,
    #[command(flatten)]
    pub(crate) registry_args: RegistryArgs,
}

/// `rfs logout`.
#[derive(Debug, Args)]
pub(crate) struct LogoutArgs {
    /// The registry: HOST[:PORT].
    #[arg(
        value_name = "REGISTRY",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub(crate) registry: Option<String>,
    /// Remove the credentials of every registry.
    #[arg(short, long)]
    pub(crate) all: bool,
}

/// `rfs run`. Kept with the container (`run.json`) for `rfs start`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunArgs {
    /// A name for the container (default: rfs-<first 8 digits of the id>).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Remove the container and its writable layer when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Run in the background: print the container's ID and leave it to a supervisor that
    /// keeps its output (`rfs logs`) and records its exit.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// Set an environment variable (KEY alone takes the value from rfs's environment).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// User (and group) to run as, names from the container's /etc/passwd and /etc/group.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub(crate) user: Option<String>,
    /// Bind mount a host path into the container.
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub(crate) volume: Vec<String>,
    /// Host name of the container (default: the first 12 digits of its id).
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Network: private (its own namespace, connected by pasta, as docker and podman), the
    /// host's, or none (its own namespace with only lo).
    #[arg(long, value_name = "private|host|none", default_value = "private")]
    pub(crate) net: NetMode,
    /// Publish a container port on the host: `[IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]`
    /// (with --net private).
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub(crate) publish: Vec<String>,
    /// Memory limit (`512m`, `2g`); a process over it is killed (exit 137). Needs root, or a
    /// delegated cgroup v2 subtree.
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<String>,
    /// CPU limit, in CPUs (`0.5`, `2`).
    #[arg(long, value_name = "N")]
    pub(crate) cpus: Option<f64>,
    /// Process (and thread) limit.
    #[arg(long, value_name = "N")]
    pub(crate) pids_limit: Option<u64>,
    /// The signal `rfs stop` sends first, instead of the image's StopSignal (SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    pub(crate) stop_signal: Option<String>,
    /// Restart policy of a detached container: `no`, or `on-failure[:N]` (start it again,
    /// at most N times, when it exits with a status other than 0).
    #[arg(long, value_name = "no|on-failure[:N]", default_value = "no")]
    pub(crate) restart: String,
    /// Make the container's root read-only.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Keep stdin open for the container.
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Give the container a pseudo-terminal.
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long, value_name = "CMD")]
    pub(crate) entrypoint: Option<String>,
    /// Image platform to pick from a multi-platform index (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Threads serving the container's filesystem.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub(crate) threads: usize,
    /// The image.
    #[arg(value_name = "SOURCE")]
    pub(crate) source: PathBuf,
    /// The command and its arguments (default: the image's Cmd).
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) command: Vec<String>,
}

/// `--net`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum NetMode {
    /// A network namespace of its own, connected to the outside by pasta.
    Private,
    /// The host's network.
    Host,
    /// A private network namespace with only the loopback interface.
    None,
}

/// `rfs ps`.
#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    /// Show all containers, not only running ones.
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
}

/// `rfs rm`.
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Container names, ids or id prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub(crate) containers: Vec<String>,
}

/// `rfs stop`.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// Seconds to wait for the container to end before it is killed.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub(crate) time: u64,
    /// The signal to stop with, instead of the image's StopSignal.
    #[arg(short = 's', long)]
    pub(crate) signal: Option<String>,
    /// Container names, ids or id prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub(crate) containers: Vec<String>,
}

/// `rfs start`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// Attach: wait for the container in this terminal (its output here, its exit status
    /// rfs's), instead of leaving it to a supervisor.
    #[arg(short, long)]
    pub(crate) attach: bool,
    /// Container names, ids or id prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub(crate) containers: Vec<String>,
}

/// `rfs kill`.
#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    /// The signal: a name (`TERM`, `SIGHUP`) or a number.
    #[arg(short = 's', long, default_value = "KILL")]
    pub(crate) signal: String,
    /// Container names, ids or id prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub(crate) containers: Vec<String>,
}

/// `rfs wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Container names, ids or id prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub(crate) containers: Vec<String>,
}

/// `rfs port`.
#[derive(Debug, Args)]
pub(crate) struct PortArgs {
    /// Container name, id or id prefix.
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
}

/// `rfs top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Container name, id or id prefix.
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
}

/// `rfs logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Keep printing what the container writes until it ends.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<usize>,
    /// Prefix each line with the time it was written (RFC 3339).
    #[arg(short = 't', long)]
    pub(crate) timestamps: bool,
    /// Container name, id or id prefix.
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
}

/// `rfs exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Keep stdin open for the command (else it reads /dev/null).
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// A terminal for the command (a pty of the container's devpts, relayed to this one).
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Detach: start the command in the background and return at once.
    #[arg(short, long)]
    pub(crate) detach: bool,
    /// The user, `USER[:GROUP]` by name (the container's) or number; default the container's.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub(crate) user: Option<String>,
    /// The working directory; default the container's.
    #[arg(short, long, value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// More environment, over the container's.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Container name, id or id prefix.
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
    /// The command and its arguments.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) command: Vec<String>,
}

/// `rfs umount`.
#[derive(Debug, Args)]
pub(crate) struct UmountArgs {
    /// Also delete the writable layer that `rfs mount` made for this mount (never one given
    /// with --upper).
    #[arg(long)]
    pub(crate) rm: bool,
    /// The mountpoint.
    pub(crate) mountpoint: PathBuf,
}

/// `rfs mounts`.
#[derive(Debug, Args)]
pub(crate) struct MountsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
}

/// `rfs prune`.
#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Also delete the writable layers of `rfs mount` that are no longer mounted.
    #[arg(long)]
    pub(crate) mounts: bool,
    /// Also delete `rfs build`'s cache (as `rfs builder prune`).
    #[arg(long)]
    pub(crate) build_cache: bool,
}

/// `rfs builder`.
#[derive(Debug, Args)]
pub(crate) struct BuilderArgs {
    #[command(subcommand)]
    pub(crate) command: BuilderCommand,
}

/// The subcommands of `rfs builder`.
#[derive(Debug, Subcommand)]
pub(crate) enum BuilderCommand {
    /// Delete the build cache, and the layers only it used.
    #[command(after_help = "Examples:\n  rfs builder prune")]
    Prune(BuilderPruneArgs),
}

/// `rfs builder prune`.
#[derive(Debug, Args)]
pub(crate) struct BuilderPruneArgs {
    /// Accepted for docker's command line; rfs never asks.
    #[arg(short, long)]
    pub(crate) force: bool,
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
    /// Delete the fresh writable layer when the mount ends, however it is unmounted.
    #[arg(long, conflicts_with_all = ["upper", "work", "read_only"])]
    pub(crate) rm: bool,
    /// Image platform to pick from a multi-platform index (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Stay in the foreground; by default rfs returns once the mount is ready.
    #[arg(short, long)]
    pub(crate) foreground: bool,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub(crate) threads: usize,
    /// Serve every read through the daemon. By default, as root on kernel 6.9 or later, the
    /// kernel reads host files of 128 KiB or more (upper files, files of directory layers)
    /// directly: FUSE passthrough. Its one limit: while such a lower file is open for
    /// reading, opening it for writing fails with EBUSY.
    #[arg(long)]
    pub(crate) no_passthrough: bool,
    /// Show the owners the image records as they are. By default an image mounted without
    /// root shows the image's root (uid and gid 0) as you, so you can change what the image's
    /// root could; other owners show as nobody (65534). The ownership the image records is
    /// kept either way, and `rfs commit` writes it back unchanged. (--lower directories
    /// always show their host owners.)
    #[arg(long, conflicts_with = "subids")]
    pub(crate) keep_ids: bool,
    /// Without root: show the image's root as you and its ids 1..N as your subordinate range
    /// (/etc/subuid, /etc/subgid), as rootless podman's storage shows them on the host.
    #[arg(long, conflicts_with = "lower")]
    pub(crate) subids: bool,
    /// Keep and follow the overlay markers (opaque, redirect, metacopy) in `user.overlay.*`,
    /// as kernel overlayfs does with `userxattr`. That is the default without root; as root
    /// the default is `trusted.overlay.*`. Directory lowers are read in the same namespace
    /// only, so an upper written without root stacks under a root mount with this option.
    #[arg(long)]
    pub(crate) userxattr: bool,
    /// Id mapping and squashing (set by the fuse-overlayfs compatible invocation).
    #[arg(skip)]
    pub(crate) ids: rfs_fs::fuse::IdMapping,
    /// Make fsync a no-op (fuse-overlayfs `fsync=0`).
    #[arg(skip)]
    pub(crate) no_fsync: bool,
}

impl MountArgs {
    /// SOURCE (none with `--lower`) and MOUNTPOINT. With `--lower` there is one positional,
    /// which clap puts into `source`; without, there are two.
    pub(crate) fn positionals(&self) -> Result<(Option<&Path>, &Path), &'static str> {
        match (&self.lower, &self.source, &self.mountpoint) {
            (Some(_), Some(m), None) => Ok((None, m)),
            (Some(_), Some(_), Some(_)) => {
                Err("with --lower, the only positional argument is the MOUNTPOINT")
            }
            (None, Some(s), Some(m)) => Ok((Some(s), m)),
            _ => Err("the MOUNTPOINT is missing"),
        }
    }
}

/// `--format` of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `rfs info --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InfoFormat {
    /// An indented `key: value` list.
    Text,
    /// One JSON object.
    Json,
}

/// `rfs info`.
#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: InfoFormat,
}

/// `rfs load`.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// The archive or layout directory to load.
    #[arg(short, long, value_name = "FILE|DIR")]
    pub(crate) input: PathBuf,
    /// Image platform to pick from a multi-platform index (os/arch[/variant]).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Also name the image NAME[:TAG] (repeatable).
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub(crate) tag: Vec<String>,
    /// Print nothing.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// `rfs import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The rootfs tar (uncompressed, gzip or zstd; - for stdin).
    #[arg(value_name = "ROOTFS.tar")]
    pub(crate) source: PathBuf,
    /// The name of the new image.
    #[arg(value_name = "NAME[:TAG]")]
    pub(crate) reference: Option<String>,
    /// A commit message.
    #[arg(short, long, value_name = "MSG")]
    pub(crate) message: Option<String>,
    /// A Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, LABEL, EXPOSE, VOLUME,
    /// WORKDIR, USER, STOPSIGNAL); repeatable.
    #[arg(short, long, value_name = "INSTRUCTION")]
    pub(crate) change: Vec<String>,
    /// The platform to record (os/arch[/variant]; default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
}

/// `rfs tag`.
#[derive(Debug, Args)]
pub(crate) struct TagArgs {
    /// The image: NAME[:TAG] or ID.
    #[arg(value_name = "SOURCE")]
    pub(crate) source: String,
    /// The new name.
    #[arg(value_name = "TARGET[:TAG]")]
    pub(crate) target: String,
}

/// `rfs images`.
#[derive(Debug, Args)]
pub(crate) struct ImagesArgs {
    /// Only images of this repository (and tag).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub(crate) reference: Option<String>,
    /// Only the image IDs.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Full image IDs.
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
}

/// `rfs rmi`.
#[derive(Debug, Args)]
pub(crate) struct RmiArgs {
    /// Remove an image with several names by ID, or one that containers use.
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Images: NAME[:TAG] (removes that name; the image goes with its last name) or ID.
    #[arg(value_name = "IMAGE", required = true)]
    pub(crate) images: Vec<String>,
}

/// `rfs history`.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The image: NAME[:TAG] or ID.
    #[arg(value_name = "IMAGE")]
    pub(crate) image: String,
    /// Sizes and dates in human-readable form (`-H false` for bytes and RFC 3339 dates).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) human: bool,
    /// Do not shorten IDs and commands.
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Only the IDs.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
}

/// `rfs inspect --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InspectType {
    /// Only images.
    Image,
    /// Only containers.
    Container,
}

/// `rfs inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Images (NAME[:TAG] or ID) or containers (name or ID).
    #[arg(value_name = "IMAGE|CONTAINER", required = true)]
    pub(crate) targets: Vec<String>,
    /// Look only for this kind of object.
    #[arg(long = "type", value_enum, value_name = "image|container")]
    pub(crate) kind: Option<InspectType>,
}

/// `rfs diff`.
#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// A container (name or ID) or an upper directory.
    #[arg(value_name = "CONTAINER|UPPERDIR")]
    pub(crate) target: String,
    /// The image below (needed for an upper directory): NAME[:TAG], ID, or an image file.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// Image platform, for an image file with several.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
}

/// `rfs commit`.
#[derive(Debug, Args)]
pub(crate) struct CommitArgs {
    /// CONTAINER [NAME[:TAG]], or only [NAME[:TAG]] with --upper.
    #[arg(value_name = "CONTAINER [NAME[:TAG]]", num_args = 0..=2)]
    pub(crate) args: Vec<String>,
    /// Commit this upper directory instead of a container's.
    #[arg(long, value_name = "DIR", requires = "image")]
    pub(crate) upper: Option<PathBuf>,
    /// The image below: NAME[:TAG], ID, or an image file (loaded into the store).
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// Image platform, for an image file with several.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// A commit message.
    #[arg(short, long, value_name = "MSG")]
    pub(crate) message: Option<String>,
    /// The author.
    #[arg(short, long, value_name = "AUTHOR")]
    pub(crate) author: Option<String>,
    /// A Dockerfile instruction to apply (CMD, ENTRYPOINT, ENV, LABEL, EXPOSE, VOLUME,
    /// WORKDIR, USER, STOPSIGNAL); repeatable.
    #[arg(short, long, value_name = "INSTRUCTION")]
    pub(crate) change: Vec<String>,
}

impl CommitArgs {
    /// The CONTAINER (none with `--upper`) and the new image's NAME, if given.
    pub(crate) fn positionals(&self) -> Result<(Option<&str>, Option<&str>), &'static str> {
        match (&self.upper, self.args.as_slice()) {
            (Some(_), []) => Ok((None, None)),
            (Some(_), [name]) => Ok((None, Some(name))),
            (Some(_), _) => Err("with --upper, the only positional argument is the NAME[:TAG]"),
            (None, [container]) => Ok((Some(container), None)),
            (None, [container, name]) => Ok((Some(container), Some(name))),
            (None, _) => {
                Err("the CONTAINER is missing (or commit an upper directory with --upper)")
            }
        }
    }
}

/// `rfs save --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SaveFormat {
    /// `docker save`'s format (docker load, podman load, skopeo docker-archive:).
    Docker,
    /// An OCI image layout in a tar (skopeo oci-archive:).
    Oci,
}

/// `rfs save`.
#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    /// Images: NAME[:TAG] or ID.
    #[arg(value_name = "IMAGE", required = true)]
    pub(crate) images: Vec<String>,
    /// The archive to write (default: stdout, if it is not a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// The archive format.
    #[arg(long, value_enum, default_value = "docker")]
    pub(crate) format: SaveFormat,
}

/// `rfs export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The container: name, ID or ID prefix.
    #[arg(value_name = "CONTAINER")]
    pub(crate) container: String,
    /// The archive to write (default: stdout, if it is not a terminal).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// `rfs cp`.
#[derive(Debug, Args)]
pub(crate) struct CpArgs {
    /// Follow a symlink that SRC names (in the container; links on the way are always
    /// followed inside it).
    #[arg(short = 'L', long)]
    pub(crate) follow_link: bool,
    /// What to copy: CONTAINER:PATH or a host path.
    #[arg(value_name = "SRC")]
    pub(crate) src: String,
    /// Where to copy it: a host path or CONTAINER:PATH.
    #[arg(value_name = "DEST")]
    pub(crate) dest: String,
}

/// `rfs build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Name the image NAME[:TAG] (repeatable).
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub(crate) tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Set a build argument (KEY alone takes the value from rfs's environment).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) build_arg: Vec<String>,
    /// Add a label to the image (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// The platform to build for (os/arch[/variant]; default: this machine's): picks it from
    /// a multi-platform base and sets TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Build the stage of this name (default: the last one).
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,
    /// Run every step; reuse nothing from earlier builds.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Pull a base that names its registry even when the store has it (a newer one, if the
    /// registry has one).
    #[arg(long)]
    pub(crate) pull: bool,
    /// Squash the layers the build adds into one (the base's layers stay); the history keeps
    /// every step.
    #[arg(long)]
    pub(crate) squash: bool,
    /// Print only the image ID.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Reproducible: record this time (seconds since the epoch) in the history and config
    /// and as every file's mtime in the new layers (default: $SOURCE_DATE_EPOCH if set).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timestamp: Option<i64>,
    /// The build context: the directory COPY and ADD read.
    #[arg(value_name = "CONTEXT")]
    pub(crate) context: PathBuf,
}

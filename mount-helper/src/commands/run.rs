//! `rfs run`: an image SOURCE → a container with its own writable layer, the union served by
//! FUSE from inside the container's user namespace, the command's exit status passed on.
//!
//! This process stays single-threaded until the sandbox is forked (see
//! `rfs_runner::process`): it opens the image, creates `<root>/containers/<id>/{upper,work,
//! rootfs,…}`, the run spec and, when the image lacks a mountpoint, the init layer
//! (`rfs_fs::init_layer`), builds the union (`crate::serve`), then forks. The sandbox mounts
//! the union on `rootfs/`, starts the init (`super::init`) as pid 1 of a new pid namespace,
//! reports its readiness over the handshake pipe, waits for the init and unmounts. Errors
//! before the container starts leave nothing behind (the container directory is removed)
//! and exit with 125; afterwards the exit status is the command's (128+N for a signal).
//!
//! `rfs run -d` forks first: the child becomes the container's supervisor (a session of its
//! own, the command's stdout and stderr piped into the container's log, `crate::container_log`)
//! and goes on as above; the parent prints the container's ID once the child reports the
//! container started, or the reason it did not (exit 125).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use rfs_fs::fuse::MountOptions;
use rfs_fs::image::model::ImageConfig;
use rfs_fs::lower::{FileKind, LayerInput, LowerTree};
use rfs_fs::ovl::Namespace;
use rfs_fs::union::{Ownership, UnionConfig, UpperDirs};
use rfs_runner::image_config::{ImageDefaults, command_line, environment};
use rfs_runner::mounts::TargetKind;
use rfs_runner::process::{self, wait_forwarding};
use rfs_runner::spec::{BindMount, Network, RunSpec};
use rfs_runner::state::{ContainerState, ContainerStore, Status};
use rfs_runner::syscall::Linux;
use rfs_runner::userns::{self, UsernsMapping};

use super::store::Container;
use crate::cli::{NetMode, RunArgs};
use crate::serve::{self, Built, HandshakeError, Notifier, Readiness, Serve};

/// Exit status when rfs itself fails before the command starts (as docker run).
const SETUP_FAILED: u8 = 125;

/// Runs `rfs run`.
pub(crate) fn run(root: Option<PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let result = if args.detach {
        detach(root, args, None)
    } else {
        start_and_wait(root, args, None, None)
            .map(|code| ExitCode::from(u8::try_from(code).unwrap_or(255)))
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("rfs: {e:#}");
            Ok(ExitCode::from(SETUP_FAILED))
        }
    }
}

/// Runs `rfs start`: each stopped container again, with its writable layer as it left it and
/// the options of its `rfs run` (`run.json`): detached (prints the name), or with `-a` here.
pub(crate) fn start(root: Option<PathBuf>, args: &crate::cli::StartArgs) -> Result<ExitCode> {
    let dir = super::root_dir(root.clone())?;
    let store = ContainerStore::new(&dir);
    let mut failed = false;
    let mut last = 0;
    for key in &args.containers {
        let result = (|| -> Result<Option<i32>> {
            let c = store
                .find(key)?
                .with_context(|| format!("no such container: {key}"))?;
            if c.is_running() {
                return Ok(None);
            }
            let saved = store.dir(&c.id).join(RUN_ARGS);
            let run: RunArgs = serde_json::from_slice(
                &std::fs::read(&saved).with_context(|| format!("reading {}", saved.display()))?,
            )
            .with_context(|| format!("reading {}", saved.display()))?;
            if args.attach {
                return start_and_wait(root.clone(), run, None, Some(c)).map(Some);
            }
            detach(root.clone(), run, Some(c)).map(|_| None)
        })();
        match result {
            Ok(code) => {
                if let Some(code) = code {
                    last = code;
                } else if !args.attach {
                    println!("{key}");
                }
            }
            Err(e) => {
                eprintln!("rfs: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(SETUP_FAILED)
    } else {
        ExitCode::from(u8::try_from(last).unwrap_or(255))
    })
}

/// Where a container keeps the options of its `rfs run`.
const RUN_ARGS: &str = "run.json";

/// `--restart`: how often a detached container is started again after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestartPolicy {
    No,
    OnFailure { max: Option<u32> },
}

impl RestartPolicy {
    fn parse(text: &str) -> Result<RestartPolicy> {
        match text.split_once(':') {
            None if text == "no" => Ok(RestartPolicy::No),
            None if text == "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            Some(("on-failure", n)) => n
                .parse()
                .map(|max| RestartPolicy::OnFailure { max: Some(max) })
                .with_context(|| format!("--restart {text}: {n:?} is not a count")),
            _ => bail!("--restart {text}: expected no or on-failure[:N] (always is not supported)"),
        }
    }

    /// Whether a container that exited with `code` after `restarts` restarts goes again.
    fn again(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

/// What a detached container's supervisor holds: the report to the `rfs run -d` that forked
/// it (until the container has started), and the container's ID once known.
struct Detached {
    report: Option<Notifier>,
    id: Option<String>,
}

/// `rfs run -d` (and `rfs start` of `existing`): forks the supervisor (the rest of an
/// `rfs run`, in a session of its own, its command's output going to the container's log) and
/// prints the container's ID once the container has started, or the reason it did not.
fn detach(
    root: Option<PathBuf>,
    args: RunArgs,
    existing: Option<ContainerState>,
) -> Result<ExitCode> {
    if args.tty || args.interactive {
        bail!("-d cannot be combined with -t or -i yet");
    }
    let policy = RestartPolicy::parse(&args.restart)?;
    let (report, started) = serve::handshake()?;
    match rfs_runner::syscall::fork_single_threaded()? {
        rfs_runner::syscall::Forked::Child => {
            drop(started);
            let code = supervise(root, args, report, existing, policy);
            std::process::exit(code);
        }
        rfs_runner::syscall::Forked::Parent(_) => {
            drop(report);
            match started.wait() {
                Ok(Readiness::Ready { notice: id }) => {
                    if existing.is_none() {
                        println!("{id}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(Readiness::Failed { reason }) => bail!("{reason}"),
                Err(HandshakeError::Closed) => {
                    bail!("the container's supervisor exited before the container started")
                }
                Err(e) => bail!("the container's supervisor: {e}"),
            }
        }
    }
}

/// The supervisor of a detached container: its own session (no terminal), its standard
/// streams on `/dev/null` until the container's directory has its logs; then `rfs run`, again
/// as long as the restart policy says.
fn supervise(
    root: Option<PathBuf>,
    args: RunArgs,
    report: Notifier,
    existing: Option<ContainerState>,
    policy: RestartPolicy,
) -> i32 {
    let redirected = nix::unistd::setsid()
        .map_err(std::io::Error::from)
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
        })
        .and_then(|null| {
            nix::unistd::dup2_stdin(&null)?;
            nix::unistd::dup2_stdout(&null)?;
            nix::unistd::dup2_stderr(&null)?;
            Ok(())
        });
    if let Err(e) = redirected {
        report.send(&Readiness::Failed {
            reason: format!("detaching the supervisor: {e}"),
        });
        return i32::from(SETUP_FAILED);
    }
    let mut detached = Detached {
        report: Some(report),
        id: None,
    };
    let mut existing = existing;
    let mut restarts = 0;
    loop {
        match start_and_wait(
            root.clone(),
            args.clone(),
            Some(&mut detached),
            existing.take(),
        ) {
            Ok(code) => {
                if !policy.again(code, restarts) || args.rm {
                    return code;
                }
                restarts += 1;
                let id = detached.id.clone().unwrap_or_default();
                let found = super::root_dir(root.clone())
                    .ok()
                    .and_then(|dir| ContainerStore::new(&dir).find(&id).ok().flatten());
                match found {
                    // `rfs rm -f` took it meanwhile: nothing to restart.
                    None => return code,
                    Some(state) => {
                        eprintln!("rfs: container exited with {code}; restart {restarts}");
                        existing = Some(state);
                    }
                }
            }
            Err(e) => {
                if let Some(report) = detached.report.take() {
                    report.send(&Readiness::Failed {
                        reason: format!("{e:#}"),
                    });
                }
                eprintln!("rfs: {e:#}");
                return i32::from(SETUP_FAILED);
            }
        }
    }
}

/// A detached container's output pipes, made for each start: the write ends become this
/// process's stdout and stderr just before the sandbox is forked (which inherits them), the
/// read ends go to the log's copier.
struct OutputPipes {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl OutputPipes {
    fn redirect() -> Result<OutputPipes> {
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("making a pipe");
        let (stdout, stdout_w) = pipe()?;
        let (stderr, stderr_w) = pipe()?;
        nix::unistd::dup2_stdout(&stdout_w).context("redirecting the container's output")?;
        nix::unistd::dup2_stderr(&stderr_w).context("redirecting the container's output")?;
        Ok(OutputPipes { stdout, stderr })
    }
}

/// Once a detached container runs: the supervisor's own messages go to `supervisor.log` in
/// the container's directory (so only the container holds the pipes' write ends), a thread
/// copies the container's output into its log, and `rfs run -d` learns the ID.
fn start_logging(
    d: &mut Detached,
    pipes: OutputPipes,
    dir: &Path,
    id: &str,
) -> Result<std::thread::JoinHandle<()>> {
    let own = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("supervisor.log"))
        .context("opening supervisor.log")?;
    nix::unistd::dup2_stdout(&own).context("redirecting the supervisor's output")?;
    nix::unistd::dup2_stderr(&own).context("redirecting the supervisor's output")?;
    let log = crate::container_log::Writer::open(dir, crate::container_log::MAX_BYTES)
        .context("opening the container's log")?;
    let OutputPipes { stdout, stderr } = pipes;
    let copier =
        std::thread::spawn(move || crate::container_log::copy_streams(stdout, stderr, log));
    d.id = Some(id.to_string());
    if let Some(report) = d.report.take() {
        report.send(&Readiness::Ready {
            notice: id.to_string(),
        });
    }
    Ok(copier)
}

/// `-v HOST:CTR[:ro|rw]`.
fn volume(spec: &str) -> Result<BindMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => bail!("-v {spec}: expected HOST:CTR or HOST:CTR:ro"),
    };
    if !ctr.starts_with('/') {
        bail!("-v {spec}: the container path must be absolute");
    }
    let source = std::fs::canonicalize(host).with_context(|| format!("-v {spec}: {host}"))?;
    Ok(BindMount {
        source,
        target: PathBuf::from(ctr),
        read_only,
    })
}

/// What the image config gives a container unless the command line says otherwise (all empty
/// for a flat rootfs tar, which has no config).
fn image_defaults(config: Option<&ImageConfig>) -> ImageDefaults {
    let section = config.and_then(|c| c.config.clone()).unwrap_or_default();
    ImageDefaults {
        env: section.env.unwrap_or_default(),
        entrypoint: section.entrypoint.unwrap_or_default(),
        cmd: section.cmd.unwrap_or_default(),
        working_dir: section.working_dir.unwrap_or_default(),
        user: section.user.unwrap_or_default(),
    }
}

/// /dev/fuse must open read-write, in this process, or no container can mount its root.
fn check_dev_fuse() -> Result<()> {
    let device = crate::host::FuseDevice::probe();
    match device.remedy() {
        None => Ok(()),
        Some(remedy) => bail!(
            "cannot use {}: {}; {remedy}",
            crate::host::FUSE_DEVICE,
            device.detail()
        ),
    }
}

/// Removes a container directory unless disarmed: nothing is left of a container that
/// never started.
struct RemoveOnFailure {
    dir: Option<PathBuf>,
}

impl RemoveOnFailure {
    fn disarm(&mut self) {
        self.dir = None;
    }
}

impl Drop for RemoveOnFailure {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn start_and_wait(
    root: Option<PathBuf>,
    args: RunArgs,
    detached: Option<&mut Detached>,
    existing: Option<ContainerState>,
) -> Result<i32> {
    serve::tune_memory();
    // Prerequisites first: a missing one means nothing is created.
    userns::check_user_namespaces()?;
    let mapping = UsernsMapping::for_current_user()?;
    check_dev_fuse()?;
    let root = super::root_dir(root)?;

    // A path (archive or layout) or an image of the store; its blobs stay leased while this
    // process (and the sandbox forked from it) lives.
    let source =
        super::store::pull::pull_if_missing(&root, &args.source, args.platform.as_deref())?
            .map_or_else(|| args.source.clone(), PathBuf::from);
    let image = super::store::open_image(&root, &source, args.platform.as_deref())
        .with_context(|| format!("reading image {}", args.source.display()))?;
    let layers = image.layers;
    let config = image_defaults(image.config.as_ref());
    let image_id = image.image_id;
    let argv = command_line(&config, args.entrypoint.as_deref(), &args.command)?;
    let volumes = args
        .volume
        .iter()
        .map(|v| volume(v))
        .collect::<Result<Vec<_>>>()?;
    let ports = args
        .publish
        .iter()
        .map(|p| crate::network::PortMapping::parse(p))
        .collect::<Result<Vec<_>>>()?;
    if !ports.is_empty() && args.net != NetMode::Private {
        bail!("-p publishes ports of a private network: it cannot go with --net host or none");
    }
    if let Some(sig) = &args.stop_signal {
        super::lifecycle::parse_signal(sig).with_context(|| format!("--stop-signal {sig}"))?;
    }
    let limits = rfs_runner::cgroup::Limits {
        memory: args
            .memory
            .as_deref()
            .map(rfs_runner::cgroup::parse_memory)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory {e}"))?,
        cpus: match args.cpus {
            Some(c) if !(c > 0.0 && c.is_finite()) => bail!("--cpus {c}: must be more than 0"),
            c => c,
        },
        pids: args.pids_limit,
    };

    let store = ContainerStore::new(&root);
    let (mut state, dir, mut cleanup) = match existing {
        // `rfs start`: the container as it was, its upper kept; nothing to remove on failure.
        Some(mut state) => {
            state.status = Status::Created;
            state.finished = None;
            state.exit_code = None;
            state.pid = None;
            state.pid_start_time = None;
            let dir = store.dir(&state.id);
            (state, dir, RemoveOnFailure { dir: None })
        }
        None => {
            let id = ContainerStore::new_id()?;
            let name = args
                .name
                .clone()
                .unwrap_or_else(|| format!("rfs-{}", &id[..8]));
            if store.list()?.iter().any(|c| c.name == name) {
                bail!(
                    "the name {name:?} is in use by another container (rfs rm it, or pick another)"
                );
            }
            let state = ContainerState {
                id,
                name,
                image: args.source.display().to_string(),
                command: argv.clone(),
                created: rfs_runner::state::now(),
                finished: None,
                status: Status::Created,
                exit_code: None,
                pid: None,
                pid_start_time: None,
                image_id: image_id.map(|d| d.to_string()),
                ports: ports.iter().map(ToString::to_string).collect(),
                stop_signal: args.stop_signal.clone(),
            };
            let dir = store.create(&state)?;
            let cleanup = RemoveOnFailure {
                dir: Some(dir.clone()),
            };
            let saved = serde_json::to_vec_pretty(&args).context("recording the run's options")?;
            std::fs::write(dir.join(RUN_ARGS), saved)
                .with_context(|| format!("writing {}", dir.join(RUN_ARGS).display()))?;
            (state, dir, cleanup)
        }
    };
    let id = state.id.clone();
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut binds = etc_files(&dir, &hostname)?;
    binds.extend(volumes);
    let spec = RunSpec {
        rootfs: rootfs.clone(),
        argv,
        env: environment(&config, &args.env, &hostname, args.tty),
        cwd: PathBuf::from(
            args.workdir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| Some(config.working_dir.clone()).filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into()),
        ),
        user: args.user.clone().unwrap_or_else(|| config.user.clone()),
        hostname,
        binds,
        network: match args.net {
            NetMode::Private => Network::Private,
            NetMode::Host => Network::Host,
            NetMode::None => Network::None,
        },
        read_only_rootfs: args.read_only,
        tty: args.tty,
        single_id: mapping.is_single(),
    };
    if !spec.cwd.is_absolute() {
        bail!(
            "-w {}: the working directory must be absolute",
            spec.cwd.display()
        );
    }
    let spec_path = dir.join("spec.json");
    spec.write(&spec_path)?;

    let tree = with_init_layer(layers, &spec, &dir)?;
    // The union is opened here, before any namespace, as the real user: so every file of a
    // rootless upper stays ours to delete.
    let fs = container_union(
        tree,
        UpperDirs { upper, work },
        &rootfs,
        &mapping,
        ContainerMount {
            fsname: format!("rfs:{}", args.source.display()),
            threads: args.threads,
            fsync: true,
        },
    )?;
    if let Some(n) = mapping.notice() {
        eprintln!("{n}");
    }

    let pty = if args.tty {
        let p = rfs_runner::tty::open_pty()?;
        set_cloexec(&p.master)?;
        set_cloexec(&p.slave)?;
        Some(p)
    } else {
        None
    };
    let signals = process::block_signals(&[Signal::SIGWINCH])?;
    let (notifier, waiter) = serve::handshake()?;
    let sandbox = Sandbox {
        fs: Some(fs),
        spec: &spec,
        spec_path: &spec_path,
        rootfs: &rootfs,
        stdin: if args.interactive {
            StdinMode::Inherit
        } else {
            StdinMode::Null
        },
        tty: pty.as_ref().map(|p| &p.slave),
    };
    // Limits: a control group of its own, which the sandbox joins before the container starts.
    let cgroup = if limits.any() {
        Some(
            rfs_runner::cgroup::Cgroup::create(Path::new("/sys/fs/cgroup"), &id, &limits)
                .context("setting --memory/--cpus/--pids-limit")?,
        )
    } else {
        None
    };
    // A private network is connected once its namespace exists, before the container starts.
    let mut network_failed = None;
    let mut pasta = None;
    let connect_network = |pid| {
        if let Some(group) = &cgroup {
            group
                .add(pid)
                .map_err(|e| rfs_runner::Error::Sandbox(format!("{e}")))?;
        }
        if spec.network != Network::Private {
            return Ok(());
        }
        match crate::network::connect(pid, &ports, &dir) {
            Ok(p) => {
                pasta = Some(p);
                Ok(())
            }
            Err(e) => {
                let reason = format!("{e:#}");
                network_failed = Some(e);
                Err(rfs_runner::Error::Sandbox(reason))
            }
        }
    };
    // A detached container's output goes to pipes its log is copied from.
    let pipes = if detached.is_some() {
        Some(OutputPipes::redirect()?)
    } else {
        None
    };
    let spawned =
        process::spawn_sandbox_then(spec.network, &mapping, &Linux, connect_network, move || {
            sandbox.run(notifier)
        });
    if let Some(e) = network_failed {
        return Err(e);
    }
    let sandbox_pid = spawned.context(
        "creating the container's namespaces (are unprivileged user namespaces allowed? see \
         user.max_user_namespaces and kernel.unprivileged_userns_clone)",
    )?;
    let pty_master = pty.map(|p| p.master);

    let not_started = match waiter.wait() {
        Ok(Readiness::Ready { notice }) => {
            eprint!("{notice}");
            None
        }
        Ok(Readiness::Failed { reason }) => Some(reason),
        Err(HandshakeError::Closed) => Some("the container process exited".to_string()),
        Err(e) => Some(format!("the container process: {e}")),
    };
    if let Some(why) = not_started {
        let _ = nix::sys::wait::waitpid(sandbox_pid, None);
        bail!("starting the container: {why}");
    }
    state.status = Status::Running;
    state.pid = Some(sandbox_pid.as_raw());
    state.pid_start_time = rfs_runner::state::process_start_time(sandbox_pid.as_raw());
    store.save(&state)?;
    cleanup.disarm();
    let copier = match (detached, pipes) {
        (Some(d), Some(pipes)) => Some(start_logging(d, pipes, &dir, &id)?),
        _ => None,
    };

    let raw = pty_master
        .as_ref()
        .and_then(|_| rfs_runner::tty::RawMode::enable());
    let relay = match &pty_master {
        Some(m) => Some(rfs_runner::tty::start_relay(m, args.interactive)?),
        None => None,
    };
    let code = wait_forwarding(sandbox_pid, &signals, false, &mut |sig| {
        if sig == Signal::SIGWINCH {
            if let Some(m) = &pty_master {
                rfs_runner::tty::copy_window_size(m);
            }
            return false;
        }
        true
    })?;
    drop(pty_master);
    if let Some(r) = relay {
        r.finish();
    }
    drop(raw);
    // The container's network and control group go with it.
    drop(pasta);
    drop(cgroup);
    // The output of the container's last moments, before its exit is recorded.
    if let Some(copier) = copier {
        let _ = copier.join();
    }

    state.status = Status::Exited;
    state.exit_code = Some(code);
    state.finished = Some(rfs_runner::state::now());
    if args.rm {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing container {}", dir.display()))?;
    } else if let Err(e) = store.save(&state) {
        // `rfs rm -f` may have removed the container meanwhile.
        log::debug!("recording the exit: {e}");
    }
    Ok(code)
}

/// One `RUN` of `rfs build`: a command over the layers so far with the fresh upper
/// `dir/upper`, in the same sandbox as `rfs run` (namespaces, union served from inside,
/// `/etc/hosts` and friends bound, init as pid 1). Nothing is recorded as a container.
pub(crate) struct BuildRun<'a> {
    /// The image's layers so far, base first.
    pub(crate) layers: Vec<LayerInput>,
    /// The command.
    pub(crate) argv: Vec<String>,
    /// Its environment (`ENV` and the stage's `ARG`s).
    pub(crate) env: Vec<String>,
    /// Its working directory and user.
    pub(crate) cwd: PathBuf,
    /// `USER`.
    pub(crate) user: String,
    /// `RUN --network`: the host's (default) or none.
    pub(crate) network: Network,
    /// A fresh directory for the step: `upper`, `work`, `rootfs`, the `/etc` files and the
    /// init layer go there.
    pub(crate) dir: &'a Path,
}

/// What a [`BuildRun`] left: the command's exit status and the init layer the union had
/// between the image and the upper (its mountpoints are not part of the step's layer).
pub(crate) struct BuildRunResult {
    pub(crate) code: i32,
    pub(crate) init_layer: Option<LayerInput>,
    /// The signal (SIGINT, SIGTERM, SIGHUP) that interrupted the build: the step was killed.
    pub(crate) interrupted: Option<Signal>,
}

/// Runs a [`BuildRun`] and waits for it. The caller must be single-threaded.
pub(crate) fn run_build_step(step: BuildRun<'_>) -> Result<BuildRunResult> {
    userns::check_user_namespaces()?;
    let mapping = UsernsMapping::for_current_user()?;
    check_dev_fuse()?;
    let dir = step.dir;
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let hostname = "rfs-build".to_string();
    let spec = RunSpec {
        rootfs: rootfs.clone(),
        argv: step.argv,
        env: step.env,
        cwd: step.cwd,
        user: step.user,
        hostname: hostname.clone(),
        binds: etc_files(dir, &hostname)?,
        network: step.network,
        read_only_rootfs: false,
        tty: false,
        single_id: mapping.is_single(),
    };
    let spec_path = dir.join("spec.json");
    spec.write(&spec_path)?;
    let tree = with_init_layer(step.layers, &spec, dir)?;
    let init_path = Container::init_layer_path(dir);
    let init_layer = if init_path.exists() {
        Some(rfs_fs::init_layer::open(&init_path)?)
    } else {
        None
    };
    let fs = container_union(
        tree,
        UpperDirs { upper, work },
        &rootfs,
        &mapping,
        ContainerMount {
            fsname: "rfs:build".to_string(),
            threads: 4,
            fsync: false,
        },
    )?;
    let signals = process::block_signals(&[])?;
    let (notifier, waiter) = serve::handshake()?;
    let sandbox = Sandbox {
        fs: Some(fs),
        spec: &spec,
        spec_path: &spec_path,
        rootfs: &rootfs,
        stdin: StdinMode::Null,
        tty: None,
    };
    let sandbox_pid = process::spawn_sandbox(spec.network, &mapping, &Linux, move || {
        sandbox.run(notifier)
    })
    .context("creating the build step's namespaces")?;
    let not_started = match waiter.wait() {
        Ok(Readiness::Ready { .. }) => None,
        Ok(Readiness::Failed { reason }) => Some(reason),
        Err(HandshakeError::Closed) => Some("the step's process exited".to_string()),
        Err(e) => Some(format!("the step's process: {e}")),
    };
    if let Some(why) = not_started {
        let _ = nix::sys::wait::waitpid(sandbox_pid, None);
        bail!("starting the step: {why}");
    }
    // Ctrl-C ends the build, not only the command (which a shell may outlive): the sandbox
    // is killed, its init and every process of the step with it (their parent-death signal),
    // and its mounts with its namespace.
    let mut interrupted = None;
    let code = wait_forwarding(sandbox_pid, &signals, false, &mut |sig| {
        if matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) {
            interrupted = Some(sig);
            let _ = nix::sys::signal::kill(sandbox_pid, Signal::SIGKILL);
            return false;
        }
        true
    })?;
    Ok(BuildRunResult {
        code,
        init_layer,
        interrupted,
    })
}

/// How a container's union is mounted: what differs between `rfs run` and a build step.
struct ContainerMount {
    fsname: String,
    threads: usize,
    /// Whether `fsync` reaches the disk (a build step's layer is written from the upper
    /// after the step anyway).
    fsync: bool,
}

/// A container's union, to be served from its user namespace: its config says what the
/// union will be there: root, whose ownership is the host's (identity mapping) or, rootless,
/// ours (uid and gid 0 there), other owners going to `user.containers.override_stat`; and
/// markers in `user.*`, as `trusted.*` can be neither set nor read inside a user namespace.
/// One home for `rfs run` and the `RUN` steps of `rfs build`.
fn container_union(
    tree: LowerTree,
    dirs: UpperDirs,
    rootfs: &Path,
    mapping: &UsernsMapping,
    mount: ContainerMount,
) -> Result<Built> {
    let ownership = if *mapping == UsernsMapping::Identity {
        Ownership::Host
    } else {
        Ownership::Override {
            own_uid: 0,
            own_gid: 0,
        }
    };
    Serve {
        lower: tree,
        upper: Some(dirs),
        config: UnionConfig {
            ownership,
            markers: Some(Namespace::User),
            // Served from the container's user namespace, where its files are its root's.
            own_ids_on_disk: None,
        },
        mountpoint: rootfs.to_path_buf(),
        options: MountOptions {
            fsname: mount.fsname,
            allow_other: true,
            read_only: false,
            threads: mount.threads,
            // With a single mapped id the kernel would show every other owner as the
            // overflow id; show them as root instead, as fuse-overlayfs's squash_to_root.
            ids: if mapping.is_single() {
                rfs_fs::fuse::IdMapping {
                    squash_uid: Some(0),
                    squash_gid: Some(0),
                    ..rfs_fs::fuse::IdMapping::default()
                }
            } else {
                rfs_fs::fuse::IdMapping::default()
            },
            fsync: mount.fsync,
            // Inside the container's user namespace the kernel refuses backing files.
            passthrough: false,
        },
    }
    .build()
}

/// The image's layers merged, with the container's init layer on top when the image lacks a
/// mountpoint of `spec` (see `rfs_fs::init_layer`): so the mountpoints are there before the
/// container starts and never land in its upper, where `rfs diff` and `rfs commit` would
/// take them for its changes.
fn with_init_layer(mut layers: Vec<LayerInput>, spec: &RunSpec, dir: &Path) -> Result<LowerTree> {
    let merge = |layers| LowerTree::build(layers).context("merging the image's layers");
    let image = merge(layers.clone())?;
    let mountpoints: Vec<(PathBuf, FileKind)> = rfs_runner::mounts::mountpoints(spec)
        .into_iter()
        .map(|(path, kind)| {
            let kind = match kind {
                TargetKind::Dir => FileKind::Dir,
                TargetKind::File => FileKind::File,
            };
            (path, kind)
        })
        .collect();
    let path = Container::init_layer_path(dir);
    if !rfs_fs::init_layer::write(&image, &mountpoints, &path)
        .context("making the container's mountpoints")?
    {
        return Ok(image);
    }
    drop(image);
    layers.push(rfs_fs::init_layer::open(&path)?);
    merge(layers)
}

/// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for the container, as files in its
/// directory, bound over the image's.
fn etc_files(dir: &Path, hostname: &str) -> Result<Vec<BindMount>> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 127.0.1.1\t{hostname}\n"
            ),
        ),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv),
    ];
    let mut binds = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        binds.push(BindMount {
            source: path,
            target: Path::new("/etc").join(name),
            read_only: false,
        });
    }
    Ok(binds)
}

fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("pseudo-terminal: FD_CLOEXEC")?;
    Ok(())
}

/// What the container's stdin is without a terminal.
#[derive(Clone, Copy)]
enum StdinMode {
    Inherit,
    Null,
}

/// What the sandbox process does once in its namespaces.
struct Sandbox<'a> {
    /// The container's union, built; taken when the sandbox mounts it.
    fs: Option<Built>,
    spec: &'a RunSpec,
    /// Where `spec` is written, for the init to read.
    spec_path: &'a Path,
    /// Where the union is mounted.
    rootfs: &'a Path,
    stdin: StdinMode,
    tty: Option<&'a OwnedFd>,
}

impl Sandbox<'_> {
    /// Mounts the union, starts the init, reports its [`Readiness`] on `ready`, waits,
    /// unmounts. Returns the init's exit status.
    fn run(mut self, ready: Notifier) -> i32 {
        let fail = |ready: Notifier, reason: String| {
            ready.send(&Readiness::Failed { reason });
            125
        };
        let signals = match process::block_signals(&[]) {
            Ok(s) => s,
            Err(e) => return fail(ready, process::chain(&e)),
        };
        let Some(fs) = self.fs.take() else {
            return fail(ready, "no filesystem to mount".to_string());
        };
        let mounted = match fs.mount(&signals) {
            Ok(m) => m,
            Err(e) => {
                return fail(
                    ready,
                    format!("mounting the image on {}: {e:#}", self.rootfs.display()),
                );
            }
        };
        let code = match self.start_init() {
            Ok(init) => {
                ready.send(&Readiness::Ready {
                    notice: String::new(),
                });
                wait_forwarding(init, &signals, false, &mut |_| true).unwrap_or_else(|e| {
                    eprintln!("rfs: {}", process::chain(&e));
                    125
                })
            }
            Err(e) => fail(ready, format!("{e:#}")),
        };
        if let Err(e) = mounted.unmount() {
            eprintln!("rfs: {e:#}");
        }
        code
    }

    fn start_init(&self) -> Result<Pid> {
        process::unshare_pid(&Linux)?;
        let spec_file = std::fs::File::open(self.spec_path)
            .with_context(|| format!("opening {}", self.spec_path.display()))?;
        let mut cmd = super::init::command(self.spec, spec_file.into());
        rfs_runner::syscall::reset_signals_on_exec(&mut cmd);
        match self.tty {
            Some(slave) => {
                cmd.stdin(Stdio::from(slave.try_clone()?));
                cmd.stdout(Stdio::from(slave.try_clone()?));
                cmd.stderr(Stdio::from(slave.try_clone()?));
            }
            None => {
                if let StdinMode::Null = self.stdin {
                    cmd.stdin(Stdio::null());
                }
            }
        }
        let child = cmd.spawn().context("starting the container's init")?;
        Ok(Pid::from_raw(child.id() as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse() {
        let v = volume("/tmp:/data:ro").unwrap();
        assert!(v.read_only && v.target == Path::new("/data"));
        assert!(volume("/tmp:data").is_err());
        assert!(volume("/tmp").is_err());
    }
}

//! The machine side of the benchmark: the journaled scratch filesystem, external commands,
//! cache dropping, interruption, and small helpers over `/proc`.
//!
//! All fixtures and every upper/work dir live on a loop-mounted, journaled ext4 image
//! (`BASE/disk.img` mounted at `BASE/fs`). The host's root filesystem is ext4 without a
//! journal, where creating files soon after many deletions is pathologically slow; measuring
//! there would measure that, not the union filesystems. The loop device does direct I/O
//! on the image, so a `syncfs` of the scratch filesystem waits for the disk: with buffered
//! loop I/O it only reached the image's page cache, and the writeback of one step's data
//! (a 1 GiB copy-up, say) ran into the next step's timing.

use std::borrow::BorrowMut;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Set by SIGINT/SIGTERM/SIGHUP; checked between steps so guards unmount on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set a flag instead of killing the harness, so every
/// mount is unmounted by its guard. Children get default handlers back at `exec`.
#[allow(unsafe_code)]
pub(crate) fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("sigaction {sig}"))?;
    }
    Ok(())
}

/// Fails once a termination signal has arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Renders a command line for messages.
fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with stdout discarded; fails with its stderr on a non-zero exit.
pub(crate) fn run(mut cmd: impl BorrowMut<Command>) -> Result<()> {
    output(cmd.borrow_mut().stdout(Stdio::null())).map(drop)
}

/// Runs `cmd` and returns its stdout; fails with its stderr on a non-zero exit.
pub(crate) fn output(mut cmd: impl BorrowMut<Command>) -> Result<String> {
    let cmd = cmd.borrow_mut();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` (stdout discarded) and returns the wall-clock seconds it took.
pub(crate) fn timed(cmd: impl BorrowMut<Command>) -> Result<f64> {
    let t = Instant::now();
    run(cmd)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Shorthand for `Command::new(program).args(args)`.
pub(crate) fn cmd<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Whether `program` is on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(program);
            f.is_file()
                && fs::metadata(&f).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// `sync`, then drops the page cache, dentries and inodes (`echo 3 > drop_caches`).
pub(crate) fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    let mut f = File::options()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .context("opening /proc/sys/vm/drop_caches (root needed)")?;
    f.write_all(b"3\n").context("writing drop_caches")?;
    Ok(())
}

/// `syncfs` of the filesystem holding `path` (what `sync -f PATH` does).
pub(crate) fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::unistd::syncfs(&f).with_context(|| format!("syncfs {}", path.display()))?;
    Ok(())
}

/// The mount points listed in `/proc/self/mountinfo`.
fn mount_points() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

/// Whether something is mounted at `path`.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    mount_points().contains(&canon)
}

/// The pid of a process (not this one) named `name` whose command line has `arg` as one of
/// its arguments: how the harness finds the daemon serving a mount point.
pub(crate) fn find_process(name: &str, arg: &Path) -> Option<u32> {
    let me = std::process::id();
    let want = arg.as_os_str().as_bytes();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|&b| b == 0);
        let argv0 = args.next().unwrap_or_default();
        let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if base == name.as_bytes() && args.any(|a| a == want) {
            return Some(pid);
        }
    }
    None
}

/// Whether process `pid` is still running (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for process `pid` to end.
pub(crate) fn wait_gone(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    while alive(pid) {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `VmRSS` of process `pid`, in KiB.
pub(crate) fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// The 1-minute load average.
pub(crate) fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The CPU idle driver and, for the guest `haltpoll` driver, how long an idle virtual CPU
/// polls before it halts (`guest_halt_poll_ns`). A FUSE round trip wakes an idle CPU twice;
/// with polling off each wakeup goes through the hypervisor, which shows in every FUSE row.
pub(crate) fn cpu_idle() -> String {
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let driver =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|| "unknown".into());
    match read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Some(ns) if driver == "haltpoll" => format!("{driver}, guest_halt_poll_ns {ns}"),
        _ => driver,
    }
}

/// Removes `path` recursively if it exists.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
    }
}

/// Unmounts `path`: `umount`, then a lazy `umount -l` if that fails.
pub(crate) fn umount_kernel(path: &Path) -> Result<()> {
    if run(cmd("umount", &[path])).is_ok() {
        return Ok(());
    }
    run(cmd("umount", &[OsStr::new("-l"), path.as_os_str()]))
}

/// Unmounts a FUSE mount: `fusermount3 -u`, then a lazy `umount -l` if that fails.
pub(crate) fn umount_fuse(path: &Path) -> Result<()> {
    if run(cmd("fusermount3", &[OsStr::new("-u"), path.as_os_str()])).is_ok() {
        return Ok(());
    }
    run(cmd("umount", &[OsStr::new("-l"), path.as_os_str()]))
}

/// The loop-mounted scratch filesystem; unmounted on drop if this run mounted it.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Where the ext4 image is mounted (`BASE/fs`).
    pub(crate) fs: PathBuf,
    mounted_here: bool,
}

impl Scratch {
    /// Mounts (creating it the first time) the journaled ext4 image under `base`, or reuses
    /// one that is already mounted there.
    pub(crate) fn open(base: &Path, size_gib: u64) -> Result<Scratch> {
        fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
        let img = base.join("disk.img");
        let dir = base.join("fs");
        fs::create_dir_all(&dir)?;
        if is_mount_point(&dir) {
            loop_direct_io(&img);
            return Ok(Scratch {
                fs: dir,
                mounted_here: false,
            });
        }
        if !img.exists() {
            eprintln!(
                "creating a {size_gib} GiB sparse journaled ext4 image at {}",
                img.display()
            );
            let f = File::create(&img)?;
            f.set_len(size_gib << 30)?;
            drop(f);
            run(cmd(
                "mkfs.ext4",
                &[OsStr::new("-q"), OsStr::new("-F"), img.as_os_str()],
            ))?;
        }
        run(cmd(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("loop"),
                img.as_os_str(),
                dir.as_os_str(),
            ],
        ))?;
        loop_direct_io(&img);
        let features =
            output(cmd("dumpe2fs", &[OsStr::new("-h"), img.as_os_str()])).unwrap_or_default();
        if !features.contains("has_journal") {
            eprintln!("warning: {} has no journal", img.display());
        }
        Ok(Scratch {
            fs: dir,
            mounted_here: true,
        })
    }
}

/// Switches the loop device backing `img` to direct I/O (`losetup --direct-io=on`); warns
/// when it cannot, as the "+ sync" rows then do not wait for the disk.
fn loop_direct_io(img: &Path) {
    let dev = output(cmd("losetup", &[OsStr::new("-j"), img.as_os_str()]))
        .ok()
        .and_then(|out| Some(out.lines().next()?.split(':').next()?.trim().to_string()))
        .filter(|d| d.starts_with("/dev/loop"));
    let Some(dev) = dev else {
        eprintln!("warning: no loop device found for {}", img.display());
        return;
    };
    if let Err(e) = run(cmd("losetup", &["--direct-io=on", dev.as_str()])) {
        eprintln!("warning: {dev} keeps buffered I/O: {e:#}");
    }
}

/// Whether the loop device backing `img` does direct I/O (for the report).
pub(crate) fn loop_uses_direct_io(img: &Path) -> bool {
    output(cmd(
        "losetup",
        &[
            OsStr::new("-n"),
            OsStr::new("-O"),
            OsStr::new("DIO"),
            OsStr::new("-j"),
            img.as_os_str(),
        ],
    ))
    .is_ok_and(|o| o.trim() == "1")
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted_here {
            if let Err(e) = umount_kernel(&self.fs) {
                eprintln!("warning: unmounting {}: {e:#}", self.fs.display());
            }
        }
    }
}

/// A small, fast, deterministic pseudo-random generator (xorshift64*), for fixture content
/// and random offsets.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; 0 is remapped).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

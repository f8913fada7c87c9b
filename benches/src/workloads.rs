//! The workloads of issue 5 and how one measured step of each runs on one system.
//!
//! Every measured step gets a fresh mount with a fresh upper and work dir (except the
//! `git status` steps, which reuse a per-system upper primed by one earlier `git status`),
//! so no step sees another's state. "Cold" means: fresh mount, then `sync` and
//! `echo 3 > /proc/sys/vm/drop_caches`, then the timed step; "warm" means the same step ran
//! once, untimed, on the same mount just before. Only the step itself is timed, except in
//! `mount-ls-cold` and the image workloads, where the mount is the point.
//!
//! "+sync" variants end the timed step with `syncfs` of the scratch filesystem, which holds
//! every upper dir and the host copies (FUSE daemons have received all data by then: a
//! FUSE `close` flushes dirty pages).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::env::{self, Rng};
use crate::fixtures::{Fixtures, Kind as EntryKind, Sizes, walk};
use crate::systems::{Mounter, System, Upper, View};

/// What a workload's number measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Wall-clock seconds (lower is better).
    Seconds,
    /// Throughput in MB/s (10^6 bytes; higher is better).
    MBps,
    /// 4 KiB reads per second (higher is better).
    Iops,
    /// Resident memory in MiB (lower is better).
    MiB,
    /// Microseconds per call (lower is better).
    Micros,
}

impl Unit {
    /// The unit's label in the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::MBps => "MB/s",
            Unit::Iops => "IOPS",
            Unit::MiB => "MiB",
            Unit::Micros => "µs",
        }
    }

    /// Whether a bigger number is better.
    pub(crate) fn higher_is_better(self) -> bool {
        matches!(self, Unit::MBps | Unit::Iops)
    }
}

/// The target for rfs on a workload.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// rfs's median over the basis system's median is at most this.
    MaxRatio(f64),
    /// rfs's median over the basis system's median is at least this (throughput).
    MinRatio(f64),
    /// rfs's median is at most this many seconds.
    MaxSeconds(f64),
}

impl Target {
    /// The target as the table shows it.
    pub(crate) fn show(self, basis: Option<System>) -> String {
        let suffix = match basis {
            Some(System::Kernel) | None => String::new(),
            Some(s) => format!(" {}", s.name()),
        };
        match self {
            Target::MaxRatio(x) => format!("≤ {x:?}×{suffix}"),
            Target::MinRatio(x) => format!("≥ {x:?}×{suffix}"),
            Target::MaxSeconds(s) if s < 1.0 => format!("≤ {} ms", s * 1000.0),
            Target::MaxSeconds(s) => format!("≤ {s} s"),
        }
    }

    /// Whether rfs meets it, given its median and its ratio to the basis.
    pub(crate) fn met(self, median: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::MaxRatio(x) => ratio.map(|r| r <= x),
            Target::MinRatio(x) => ratio.map(|r| r >= x),
            Target::MaxSeconds(s) => Some(median <= s),
        }
    }
}

/// Which image archive an image workload mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Image {
    /// The Debian `docker save` archive.
    Debian,
    /// The ~1 GiB rootfs tar.
    Big,
}

/// Which `git status` state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GitMode {
    /// First status on a fresh upper, cold (the index comes from the lower as committed).
    Fresh,
    /// Cold, with an upper where `git status` already ran once on this system.
    Cold,
    /// Warm, with that primed upper.
    Warm,
}

/// What a workload does.
#[derive(Clone, Copy, Debug)]
enum Step {
    MountLs,
    Find { cold: bool },
    Stat { cold: bool },
    SeqRead { cold: bool },
    RandRead { cold: bool },
    Git(GitMode),
    Make,
    Append { sync: bool },
    Chmod { sync: bool },
    TarX { sync: bool },
    RmRf,
    ParRead(usize),
    RoundTrip { one_cpu: bool },
    ImageMount { image: Image, first: bool },
    Rss,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Workload {
    /// Short name (`--only`, JSON).
    pub(crate) name: &'static str,
    /// What the table says.
    pub(crate) title: &'static str,
    /// The number's unit.
    pub(crate) unit: Unit,
    /// The system ratios are taken against (`None`: no ratios).
    pub(crate) basis: Option<System>,
    /// The target for rfs.
    pub(crate) target: Option<Target>,
    /// The systems this workload applies to.
    pub(crate) systems: &'static [System],
    step: Step,
}

const ALL: &[System] = &System::ALL;
const RFS: &[System] = &[System::Rfs];
const FUSE: &[System] = &[System::Rfs, System::FuseOverlayfs];
const K: Option<System> = Some(System::Kernel);

const fn w(
    name: &'static str,
    title: &'static str,
    unit: Unit,
    target: Option<Target>,
    step: Step,
) -> Workload {
    Workload {
        name,
        title,
        unit,
        basis: K,
        target,
        systems: ALL,
        step,
    }
}

/// Every workload, in table order.
pub(crate) const WORKLOADS: &[Workload] = &[
    w(
        "mount-ls-cold",
        "mount + first `ls -R`, cold",
        Unit::Seconds,
        Some(Target::MaxRatio(1.0)),
        Step::MountLs,
    ),
    w(
        "find-cold",
        "`find -type f`, cold",
        Unit::Seconds,
        Some(Target::MaxRatio(1.3)),
        Step::Find { cold: true },
    ),
    w(
        "find-warm",
        "`find -type f`, warm",
        Unit::Seconds,
        Some(Target::MaxRatio(1.1)),
        Step::Find { cold: false },
    ),
    w(
        "stat-cold",
        "stat every entry, cold",
        Unit::Seconds,
        Some(Target::MaxRatio(1.3)),
        Step::Stat { cold: true },
    ),
    w(
        "stat-warm",
        "stat every entry, warm",
        Unit::Seconds,
        Some(Target::MaxRatio(1.1)),
        Step::Stat { cold: false },
    ),
    w(
        "seqread-cold",
        "sequential read 1 GiB, cold",
        Unit::MBps,
        Some(Target::MinRatio(0.85)),
        Step::SeqRead { cold: true },
    ),
    w(
        "seqread-warm",
        "sequential read 1 GiB, warm",
        Unit::MBps,
        Some(Target::MinRatio(0.9)),
        Step::SeqRead { cold: false },
    ),
    w(
        "randread-cold",
        "4k random read, cold",
        Unit::Iops,
        None,
        Step::RandRead { cold: true },
    ),
    w(
        "randread-warm",
        "4k random read, warm",
        Unit::Iops,
        Some(Target::MinRatio(0.9)),
        Step::RandRead { cold: false },
    ),
    w(
        "git-status-fresh",
        "`git status`, cold, fresh upper (first status)",
        Unit::Seconds,
        None,
        Step::Git(GitMode::Fresh),
    ),
    w(
        "git-status-cold",
        "`git status` after a cold mount",
        Unit::Seconds,
        Some(Target::MaxRatio(1.5)),
        Step::Git(GitMode::Cold),
    ),
    w(
        "git-status-warm",
        "`git status`, warm",
        Unit::Seconds,
        Some(Target::MaxRatio(1.2)),
        Step::Git(GitMode::Warm),
    ),
    w(
        "make-j2",
        "`make -j2` of the C project",
        Unit::Seconds,
        None,
        Step::Make,
    ),
    w(
        "append",
        "append 1 byte to the 1 GiB lower file (copy-up)",
        Unit::Seconds,
        Some(Target::MaxRatio(1.0)),
        Step::Append { sync: false },
    ),
    w(
        "append-sync",
        "append 1 byte to the 1 GiB lower file + sync",
        Unit::Seconds,
        Some(Target::MaxRatio(1.0)),
        Step::Append { sync: true },
    ),
    w(
        "chmod",
        "chmod of the 1 GiB lower file",
        Unit::Seconds,
        Some(Target::MaxSeconds(0.020)),
        Step::Chmod { sync: false },
    ),
    w(
        "chmod-sync",
        "chmod of the 1 GiB lower file + sync",
        Unit::Seconds,
        Some(Target::MaxSeconds(0.020)),
        Step::Chmod { sync: true },
    ),
    w(
        "tar-x",
        "`tar -x` of 10k small files",
        Unit::Seconds,
        Some(Target::MaxRatio(2.0)),
        Step::TarX { sync: false },
    ),
    w(
        "tar-x-sync",
        "`tar -x` of 10k small files + sync",
        Unit::Seconds,
        Some(Target::MaxRatio(2.0)),
        Step::TarX { sync: true },
    ),
    w(
        "rm-rf",
        "`rm -rf` of a ~5k-entry lower tree",
        Unit::Seconds,
        Some(Target::MaxRatio(2.0)),
        Step::RmRf,
    ),
    w(
        "par-read-2",
        "2 parallel readers of the tree's files, warm",
        Unit::Seconds,
        None,
        Step::ParRead(2),
    ),
    w(
        "par-read-4",
        "4 parallel readers of the tree's files, warm",
        Unit::Seconds,
        None,
        Step::ParRead(4),
    ),
    w(
        "roundtrip",
        "one request: `getxattr` of a missing attribute, per call",
        Unit::Micros,
        None,
        Step::RoundTrip { one_cpu: false },
    ),
    w(
        "roundtrip-1cpu",
        "one request, daemon and caller pinned to one CPU, per call",
        Unit::Micros,
        None,
        Step::RoundTrip { one_cpu: true },
    ),
    Workload {
        name: "image-debian-first",
        title: "`rfs mount` Debian docker-save archive to first `ls`, first time (cold)",
        unit: Unit::Seconds,
        basis: None,
        target: Some(Target::MaxSeconds(1.0)),
        systems: RFS,
        step: Step::ImageMount {
            image: Image::Debian,
            first: true,
        },
    },
    Workload {
        name: "image-debian-cached",
        title: "`rfs mount` Debian docker-save archive to first `ls`, cached index",
        unit: Unit::Seconds,
        basis: None,
        target: Some(Target::MaxSeconds(0.050)),
        systems: RFS,
        step: Step::ImageMount {
            image: Image::Debian,
            first: false,
        },
    },
    Workload {
        name: "image-1g-first",
        title: "`rfs mount` 1 GiB rootfs tar to first `ls`, first time (cold)",
        unit: Unit::Seconds,
        basis: None,
        target: None,
        systems: RFS,
        step: Step::ImageMount {
            image: Image::Big,
            first: true,
        },
    },
    Workload {
        name: "image-1g-cached",
        title: "`rfs mount` 1 GiB rootfs tar to first `ls`, cached index",
        unit: Unit::Seconds,
        basis: None,
        target: None,
        systems: RFS,
        step: Step::ImageMount {
            image: Image::Big,
            first: false,
        },
    },
    Workload {
        name: "rss-walk",
        title: "daemon RSS after walking a ~100k-entry tree",
        unit: Unit::MiB,
        basis: Some(System::FuseOverlayfs),
        target: Some(Target::MaxRatio(0.5)),
        systems: FUSE,
        step: Step::Rss,
    },
];

/// Runs measured steps; holds what steps share across repetitions.
pub(crate) struct Runner<'a> {
    m: &'a Mounter,
    fx: &'a Fixtures,
    sizes: Sizes,
    /// The scratch filesystem (`syncfs` target).
    scratch: PathBuf,
    fio: bool,
    /// Per-system upper dirs where `git status` already ran once.
    git_primed: HashMap<System, PathBuf>,
    /// rfs roots whose image index is already cached.
    image_roots: HashMap<Image, PathBuf>,
    /// Whether a step's output was already checked on a system.
    checked: HashMap<(&'static str, System), ()>,
    /// Warnings for the report (e.g. `git status` not clean).
    pub(crate) notes: Vec<String>,
}

impl<'a> Runner<'a> {
    /// A runner over the given mounter and fixtures.
    pub(crate) fn new(m: &'a Mounter, fx: &'a Fixtures, sizes: Sizes, scratch: PathBuf) -> Self {
        let fio = env::have("fio");
        if !fio {
            eprintln!("fio not found: 4k random reads use the built-in pread loop");
        }
        Runner {
            m,
            fx,
            sizes,
            scratch,
            fio,
            git_primed: HashMap::new(),
            image_roots: HashMap::new(),
            checked: HashMap::new(),
            notes: Vec::new(),
        }
    }

    /// Whether the workload can run at all here (its fixture exists).
    pub(crate) fn available(&self, w: &Workload) -> bool {
        !matches!(
            w.step,
            Step::ImageMount {
                image: Image::Debian,
                ..
            }
        ) || self.fx.debian_image.is_some()
    }

    /// How random reads are made (for the report).
    pub(crate) fn randread_tool(&self) -> &'static str {
        if self.fio {
            "fio (psync, 4k, randread)"
        } else {
            "built-in pread loop"
        }
    }

    /// Runs one measured step of `w` on `sys` and returns its number.
    pub(crate) fn measure(&mut self, w: &Workload, sys: System) -> Result<f64> {
        env::check_interrupted()?;
        let fx = self.fx;
        match w.step {
            Step::MountLs => {
                let upper = self.upper(sys)?;
                env::drop_caches()?;
                let t = Instant::now();
                let view = self.m.mount(sys, &fx.tree, &upper)?;
                env::run(env::cmd("ls", &[OsStr::new("-R"), view.root.as_os_str()]))?;
                let secs = t.elapsed().as_secs_f64();
                view.close()?;
                Ok(secs)
            }
            Step::Find { cold } => {
                let view = self.mount_fresh(sys, &fx.tree)?;
                let mut find = || {
                    env::timed(env::cmd(
                        "find",
                        &[view.root.as_os_str(), OsStr::new("-type"), OsStr::new("f")],
                    ))
                };
                self.prepare_cache(cold, &mut find)?;
                let secs = find()?;
                view.close()?;
                Ok(secs)
            }
            Step::Stat { cold } => {
                let view = self.mount_fresh(sys, &fx.tree)?;
                let mut stat = || -> Result<f64> {
                    let t = Instant::now();
                    stat_walk(&view.root)?;
                    Ok(t.elapsed().as_secs_f64())
                };
                self.prepare_cache(cold, &mut stat)?;
                let secs = stat()?;
                view.close()?;
                Ok(secs)
            }
            Step::SeqRead { cold } => {
                let view = self.mount_fresh(sys, &fx.big)?;
                let path = view.root.join(fx.big_name);
                let mut read = || -> Result<f64> {
                    let t = Instant::now();
                    let n = read_all(&path)?;
                    if n != fx.big_bytes {
                        bail!(
                            "read {n} bytes of {}, expected {}",
                            path.display(),
                            fx.big_bytes
                        );
                    }
                    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
                };
                self.prepare_cache(cold, &mut read)?;
                let v = read()?;
                view.close()?;
                Ok(v)
            }
            Step::RandRead { cold } => {
                let view = self.mount_fresh(sys, &fx.big)?;
                let path = view.root.join(fx.big_name);
                if cold {
                    env::drop_caches()?;
                } else {
                    read_all(&path)?;
                }
                let full = self.sizes.big_bytes == Sizes::FULL.big_bytes;
                let ios: u64 = match (cold, full) {
                    (true, true) => 8192,
                    (false, true) => 65536,
                    (true, false) => 2048,
                    (false, false) => 16384,
                };
                let v = if self.fio {
                    fio_randread(&path, fx.big_bytes, ios)?
                } else {
                    pread_randread(&path, fx.big_bytes, ios)?
                };
                view.close()?;
                Ok(v)
            }
            Step::Git(mode) => self.git_status(w, sys, mode),
            Step::Make => {
                let view = self.mount_fresh(sys, &fx.cproj)?;
                let proj = view.root.join("proj");
                if sys == System::Host {
                    env::remove_tree(&proj.join("build"))?;
                }
                let r = env::timed(env::cmd(
                    "make",
                    &[
                        OsStr::new("-s"),
                        OsStr::new("-j2"),
                        OsStr::new("-C"),
                        proj.as_os_str(),
                    ],
                ));
                if sys == System::Host {
                    env::remove_tree(&proj.join("build"))?;
                }
                view.close()?;
                r
            }
            Step::Append { sync } => {
                let view = self.mount_fresh(sys, &fx.big)?;
                let path = view.root.join(fx.big_name);
                env::syncfs(&self.scratch)?;
                let t = Instant::now();
                let mut f = File::options()
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {} for append", path.display()))?;
                f.write_all(b"x")?;
                drop(f);
                if sync {
                    env::syncfs(&self.scratch)?;
                }
                let secs = t.elapsed().as_secs_f64();
                let size = fs::metadata(&path)?.len();
                if size != fx.big_bytes + 1 {
                    bail!("size after append is {size}, expected {}", fx.big_bytes + 1);
                }
                if sys == System::Host {
                    File::options()
                        .write(true)
                        .open(&path)?
                        .set_len(fx.big_bytes)?;
                }
                view.close()?;
                Ok(secs)
            }
            Step::Chmod { sync } => {
                let view = self.mount_fresh(sys, &fx.big)?;
                let path = view.root.join(fx.big_name);
                let before = fs::metadata(&path)?.permissions().mode() & 0o7777;
                env::syncfs(&self.scratch)?;
                let t = Instant::now();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
                if sync {
                    env::syncfs(&self.scratch)?;
                }
                let secs = t.elapsed().as_secs_f64();
                let after = fs::metadata(&path)?.permissions().mode() & 0o7777;
                if after != 0o600 {
                    bail!("mode after chmod is {after:o}");
                }
                if sys == System::Host {
                    fs::set_permissions(&path, fs::Permissions::from_mode(before))?;
                }
                view.close()?;
                Ok(secs)
            }
            Step::TarX { sync } => {
                let view = self.mount_fresh(sys, &fx.tree)?;
                let target = view.root.join("xt");
                env::remove_tree(&target)?;
                env::syncfs(&self.scratch)?;
                let t = Instant::now();
                env::run(env::cmd(
                    "tar",
                    &[
                        OsStr::new("-xf"),
                        fx.tarball.as_os_str(),
                        OsStr::new("-C"),
                        view.root.as_os_str(),
                    ],
                ))?;
                if sync {
                    env::syncfs(&self.scratch)?;
                }
                let secs = t.elapsed().as_secs_f64();
                let expected = self.sizes.tar_files;
                self.check_once(w.name, sys, || {
                    let n = walk(&target, usize::MAX)?
                        .iter()
                        .filter(|(_, k)| *k == EntryKind::File)
                        .count();
                    Ok(if n == expected {
                        Ok(())
                    } else {
                        Err(format!("{n} files extracted, expected {expected}"))
                    })
                })?;
                if sys == System::Host {
                    env::remove_tree(&target)?;
                }
                view.close()?;
                Ok(secs)
            }
            Step::RmRf => {
                let view = self.mount_fresh(sys, &fx.tree)?;
                let target = view.root.join(&fx.rm_dir);
                if sys == System::Host && !target.exists() {
                    restore(&fx.rm_pristine, &target)?;
                }
                let secs = env::timed(env::cmd("rm", &[OsStr::new("-rf"), target.as_os_str()]))?;
                if target.symlink_metadata().is_ok() {
                    bail!("{} still exists after rm -rf", target.display());
                }
                if sys == System::Host {
                    restore(&fx.rm_pristine, &target)?;
                }
                view.close()?;
                Ok(secs)
            }
            Step::ParRead(n) => {
                let view = self.mount_fresh(sys, &fx.tree)?;
                let files: Vec<PathBuf> = walk(&view.root, usize::MAX)?
                    .into_iter()
                    .filter(|(_, k)| *k == EntryKind::File)
                    .map(|(p, _)| view.root.join(p))
                    .collect();
                read_files(&files, 1)?;
                let t = Instant::now();
                read_files(&files, n)?;
                let secs = t.elapsed().as_secs_f64();
                view.close()?;
                Ok(secs)
            }
            Step::RoundTrip { one_cpu } => {
                let view = self.mount_fresh(sys, &fx.big)?;
                let file = view.root.join(fx.big_name);
                if one_cpu && let Some(pid) = view.daemon() {
                    pin_process(pid, 0)?;
                }
                let micros = round_trip_micros(&file, one_cpu)?;
                view.close()?;
                Ok(micros)
            }
            Step::ImageMount { image, first } => self.image_mount(image, first),
            Step::Rss => {
                let view = self.mount_fresh(sys, &fx.wide)?;
                let n = stat_walk(&view.root)?;
                let pid = view.daemon().context("no daemon pid")?;
                let kib = env::vm_rss_kib(pid)?;
                let expected = self.sizes.wide.0 * (self.sizes.wide.1 + 1);
                self.check_once(w.name, sys, || {
                    Ok(if n == expected {
                        Ok(())
                    } else {
                        Err(format!("walked {n} entries, expected {expected}"))
                    })
                })?;
                view.close()?;
                Ok(kib as f64 / 1024.0)
            }
        }
    }

    /// A prepared upper for a non-host system (so the timed part does not make it).
    fn upper(&self, sys: System) -> Result<Upper> {
        if sys == System::Host {
            Ok(Upper::Fresh)
        } else {
            self.m.prepare_upper(sys)
        }
    }

    fn mount_fresh(&self, sys: System, stack: &crate::systems::Stack) -> Result<View> {
        let upper = self.upper(sys)?;
        self.m.mount(sys, stack, &upper)
    }

    /// Cold: drops caches. Warm: runs the step once, untimed.
    fn prepare_cache<T>(&self, cold: bool, step: &mut dyn FnMut() -> Result<T>) -> Result<()> {
        if cold {
            env::drop_caches()
        } else {
            step().map(drop)
        }
    }

    /// Runs `check` the first time a workload runs on a system; a failed check is a note.
    fn check_once(
        &mut self,
        name: &'static str,
        sys: System,
        check: impl FnOnce() -> Result<Result<(), String>>,
    ) -> Result<()> {
        if self.checked.insert((name, sys), ()).is_some() {
            return Ok(());
        }
        if let Err(msg) = check()? {
            let note = format!("{name} on {}: {msg}", sys.name());
            eprintln!("warning: {note}");
            self.notes.push(note);
        }
        Ok(())
    }

    fn git_status(&mut self, w: &Workload, sys: System, mode: GitMode) -> Result<f64> {
        let fx = self.fx;
        let upper = match mode {
            GitMode::Fresh => self.upper(sys)?,
            GitMode::Cold | GitMode::Warm => Upper::Persistent(self.primed_git_upper(sys)?),
        };
        let view = self.m.mount(sys, &fx.git, &upper)?;
        let repo = view.root.join("repo");
        if mode == GitMode::Warm {
            env::run(git(&repo, "status"))?;
        } else {
            env::drop_caches()?;
        }
        let secs = env::timed(git(&repo, "status"))?;
        self.check_once(w.name, sys, || {
            let out = env::output(git(&repo, "status").arg("--porcelain"))?;
            Ok(if out.trim().is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "`git status` is not clean: {}",
                    out.lines().take(3).collect::<Vec<_>>().join("; ")
                ))
            })
        })?;
        view.close()?;
        Ok(secs)
    }

    /// The per-system upper where `git status` ran once (made on first use).
    fn primed_git_upper(&mut self, sys: System) -> Result<PathBuf> {
        if let Some(d) = self.git_primed.get(&sys) {
            return Ok(d.clone());
        }
        let d = self.m.run_dir().join(format!("git-primed-{}", sys.name()));
        env::remove_tree(&d)?;
        let view = self
            .m
            .mount(sys, &self.fx.git, &Upper::Persistent(d.clone()))?;
        env::run(git(&view.root.join("repo"), "status"))?;
        view.close()?;
        self.git_primed.insert(sys, d.clone());
        Ok(d)
    }

    fn image_path(&self, image: Image) -> Result<PathBuf> {
        match image {
            Image::Debian => self.fx.debian_image.clone().context("no Debian image"),
            Image::Big => Ok(self.fx.big_image.clone()),
        }
    }

    fn image_mount(&mut self, image: Image, first: bool) -> Result<f64> {
        let path = self.image_path(image)?;
        let root = if first {
            let r = self.m.fresh_dir("rfs-image-root")?;
            env::drop_caches()?;
            r
        } else if let Some(r) = self.image_roots.get(&image) {
            r.clone()
        } else {
            let r = self.m.fresh_dir("rfs-image-cached")?;
            self.m.mount_image(&r, &path)?.close()?;
            self.image_roots.insert(image, r.clone());
            r
        };
        let t = Instant::now();
        let view = self.m.mount_image(&root, &path)?;
        env::run(env::cmd("ls", &[view.root.as_os_str()]))?;
        let secs = t.elapsed().as_secs_f64();
        view.close()?;
        if first {
            env::remove_tree(&root)?;
        } else {
            // The writable mount's fresh upper.
            env::remove_tree(&root.join("mounts"))?;
        }
        Ok(secs)
    }
}

/// `git -C repo ARG` with no user or system config.
fn git(repo: &Path, arg: &str) -> std::process::Command {
    let mut c = env::cmd(
        "git",
        &[OsStr::new("-C"), repo.as_os_str(), OsStr::new(arg)],
    );
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

/// `cp -a pristine` to where it belongs.
fn restore(pristine: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().context("no parent")?;
    env::run(env::cmd(
        "cp",
        &[OsStr::new("-a"), pristine.as_os_str(), parent.as_os_str()],
    ))
}

/// lstat of every entry below `root` (via the directory fd, as `ls -l` does); returns the
/// number of entries.
pub(crate) fn stat_walk(root: &Path) -> Result<usize> {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let m = e.metadata()?;
            n += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

/// Reads `path` to the end with 1 MiB reads; returns the byte count.
fn read_all(path: &Path) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

/// Reads all `files` with `threads` threads (thread k reads every k-th file).
fn read_files(files: &[PathBuf], threads: usize) -> Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || -> Result<()> {
                    let mut buf = Vec::new();
                    for f in files.iter().skip(k).step_by(threads) {
                        buf.clear();
                        File::open(f)
                            .and_then(|mut h| h.read_to_end(&mut buf))
                            .with_context(|| format!("reading {}", f.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("reader panicked"))?)
    })
}

/// 4 KiB random reads with fio (psync engine); returns IOPS.
fn fio_randread(path: &Path, size: u64, ios: u64) -> Result<f64> {
    let mut filename = std::ffi::OsString::from("--filename=");
    filename.push(path);
    let out = env::output(
        env::cmd(
            "fio",
            &[
                "--name=randread",
                "--readonly",
                "--rw=randread",
                "--bs=4k",
                "--ioengine=psync",
                "--invalidate=0",
                "--randrepeat=1",
                "--norandommap",
                "--output-format=json",
            ],
        )
        .arg(format!("--size={size}"))
        .arg(format!("--io_size={}", ios * 4096))
        .arg(filename),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing fio's JSON")?;
    v["jobs"][0]["read"]["iops"]
        .as_f64()
        .context("no jobs[0].read.iops in fio's output")
}

/// The built-in fallback: `ios` 4 KiB `pread`s at random aligned offsets; returns IOPS.
fn pread_randread(path: &Path, size: u64, ios: u64) -> Result<f64> {
    let f = File::open(path)?;
    let mut rng = Rng::new(4);
    let mut buf = [0u8; 4096];
    let blocks = size / 4096;
    let t = Instant::now();
    for _ in 0..ios {
        let off = (rng.next_u64() % blocks) * 4096;
        f.read_exact_at(&mut buf, off)?;
    }
    Ok(ios as f64 / t.elapsed().as_secs_f64())
}

/// Binds every thread of process `pid` to CPU `cpu` (`taskset -a -p`).
fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    env::run(env::cmd(
        "taskset",
        &[
            OsStr::new("-a"),
            OsStr::new("-p"),
            OsStr::new("-c"),
            OsStr::new(&cpu.to_string()),
            OsStr::new(&pid.to_string()),
        ],
    ))
}

/// Calls `getxattr` of an attribute `file` does not have 20,000 times (after 1,000
/// untimed calls) and returns the mean microseconds per call. On a FUSE mount every call
/// is one request to the daemon and its reply: the kernel caches no xattrs. With
/// `one_cpu` the calling thread is bound to CPU 0 for the duration.
#[allow(unsafe_code)]
fn round_trip_micros(file: &Path, one_cpu: bool) -> Result<f64> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    const CALLS: u32 = 20_000;
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())?;
    let name = c"user.rfs-bench-absent";
    let call = || -> Result<()> {
        let mut buf = [0u8; 64];
        // SAFETY: `path` and `name` are NUL-terminated; `buf` outlives the call and its
        // length is passed.
        let r = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let err = std::io::Error::last_os_error();
        match (r, err.raw_os_error()) {
            (-1, Some(libc::ENODATA)) => Ok(()),
            (-1, _) => Err(err).with_context(|| format!("getxattr {}", file.display())),
            _ => bail!("{} has the attribute meant to be absent", file.display()),
        }
    };
    let all = sched_getaffinity(Pid::from_raw(0))?;
    if one_cpu {
        let mut first = CpuSet::new();
        first.set(0)?;
        sched_setaffinity(Pid::from_raw(0), &first)?;
    }
    let result = (|| {
        for _ in 0..1000 {
            call()?;
        }
        let t = Instant::now();
        for _ in 0..CALLS {
            call()?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS))
    })();
    sched_setaffinity(Pid::from_raw(0), &all)?;
    result
}

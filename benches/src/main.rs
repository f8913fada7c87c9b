//! `rfs-bench`: rfs side by side with fuse-overlayfs, kernel overlayfs and the plain host
//! directory, on the workloads of issue 5.
//!
//! Fixtures are built once on a loop-mounted journaled ext4 image (see [`env`] and
//! [`fixtures`]). Each workload then runs `--reps` repetitions; within a repetition every
//! system runs once, in an order rotated by one each repetition, so slow drifts of a shared
//! machine hit every system alike. The table shows medians and each median's ratio to
//! kernel overlayfs from the same run; compare ratios, never absolute numbers across runs.
//!
//! Needs root (kernel overlay mounts, `drop_caches`, the loop mount). Every mount it makes is
//! unmounted on every exit path, including Ctrl-C.

mod env;
mod fixtures;
mod report;
mod systems;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::fixtures::Sizes;
use crate::report::WorkloadResult;
use crate::systems::{Mounter, Stack, System, Upper};
use crate::workloads::{Runner, WORKLOADS};

/// Benchmarks rfs against fuse-overlayfs, kernel overlayfs and the host directory.
#[derive(Debug, Parser)]
#[command(name = "rfs-bench")]
struct Args {
    /// Small fixtures and 1 repetition (unless --reps), for developing the harness.
    #[arg(long)]
    quick: bool,
    /// Repetitions per workload and system [default: 5, or 1 with --quick].
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Only these workloads (names or name prefixes, comma-separated; see --list).
    #[arg(long, value_delimiter = ',', value_name = "WORKLOAD")]
    only: Vec<String>,
    /// Only these systems (rfs, fuse-overlayfs, kernel, host; comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "SYSTEM")]
    systems: Vec<String>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The rfs binary [default: `rfs` next to this binary].
    #[arg(long, value_name = "PATH")]
    rfs: Option<PathBuf>,
    /// Where the ext4 image, its mount and the mount points live.
    #[arg(long, value_name = "DIR", default_value = "/tmp/rfs-bench")]
    base: PathBuf,
    /// Size of the sparse ext4 image when it is created.
    #[arg(long, value_name = "GIB", default_value_t = 12)]
    disk_gib: u64,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// Build (or check) the fixtures and exit.
    #[arg(long)]
    prepare_only: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rfs-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn selected_workloads(only: &[String]) -> Result<Vec<&'static workloads::Workload>> {
    if only.is_empty() {
        return Ok(WORKLOADS.iter().collect());
    }
    for o in only {
        if !WORKLOADS.iter().any(|w| w.name.starts_with(o.as_str())) {
            bail!("no workload matches {o:?} (see --list)");
        }
    }
    Ok(WORKLOADS
        .iter()
        .filter(|w| only.iter().any(|o| w.name.starts_with(o.as_str())))
        .collect())
}

fn run(args: Args) -> Result<ExitCode> {
    if args.list {
        for w in WORKLOADS {
            println!("{:<22} {}", w.name, w.title);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("rfs-bench needs root (kernel overlay mounts, drop_caches, a loop mount)");
    }
    env::install_signal_handlers()?;
    let workloads = selected_workloads(&args.only)?;
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 5 }).max(1);
    let sizes = if args.quick {
        Sizes::QUICK
    } else {
        Sizes::FULL
    };
    let rfs = match args.rfs {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("rfs"),
    };
    let rfs = std::fs::canonicalize(&rfs).with_context(|| {
        format!(
            "rfs binary {} (build it: cargo build --release -p rfs-mount-helper, or pass --rfs)",
            rfs.display()
        )
    })?;
    let mut systems: Vec<System> = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        args.systems
            .iter()
            .map(|s| System::parse(s))
            .collect::<Result<_>>()?
    };
    if systems.contains(&System::FuseOverlayfs) && !env::have("fuse-overlayfs") {
        eprintln!("warning: fuse-overlayfs is not installed; leaving it out");
        systems.retain(|s| *s != System::FuseOverlayfs);
    }
    systems.sort();
    systems.dedup();

    let scratch = env::Scratch::open(&args.base, args.disk_gib)?;
    let fx_dir = scratch
        .fs
        .join("fixtures")
        .join(if args.quick { "quick" } else { "full" });
    let fx = fixtures::prepare(&fx_dir, sizes)?;
    if args.prepare_only {
        println!("{}", serde_json::to_string_pretty(&fx.summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mounter = Mounter::new(rfs.clone(), args.base.join("mnt"), scratch.fs.join("run"))?;

    let view_check = check_views(&mounter, &fx.tree, &systems)?;
    let mut runner = Runner::new(&mounter, &fx, sizes, scratch.fs.clone());
    let load_before = env::load_average();
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for w in &workloads {
        let syss: Vec<System> = systems
            .iter()
            .copied()
            .filter(|s| w.systems.contains(s))
            .collect();
        if syss.is_empty() {
            continue;
        }
        if !runner.available(w) {
            eprintln!("skipping {}: its fixture is missing", w.name);
            continue;
        }
        let mut result = WorkloadResult::new(w);
        for rep in 0..reps {
            for i in 0..syss.len() {
                let sys = syss[(i + rep) % syss.len()];
                let r = runner.measure(w, sys);
                if let Err(e) = &r {
                    if env::check_interrupted().is_err() {
                        return Err(anyhow::anyhow!("interrupted"));
                    }
                    eprintln!(
                        "[{}] rep {}/{reps} {}: error: {e:#}",
                        w.name,
                        rep + 1,
                        sys.name()
                    );
                } else if let Ok(v) = &r {
                    eprintln!(
                        "[{}] rep {}/{reps} {}: {} {}",
                        w.name,
                        rep + 1,
                        sys.name(),
                        report::fmt_value(w.unit, *v),
                        w.unit.label()
                    );
                }
                result.record(sys, &r);
            }
        }
        result.finish();
        results.push(result);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_after = env::load_average();

    let table = report::table(&results, &systems);
    println!("{table}");
    let command: Vec<String> = std::env::args().collect();
    let cpu_idle = env::cpu_idle();
    let direct_io = env::loop_uses_direct_io(&args.base.join("disk.img"));
    println!(
        "{} repetitions, load average {load_before:.2} before, {load_after:.2} after, {:.0} s; \
         cpu idle: {cpu_idle}; scratch loop device direct I/O: {}",
        reps,
        elapsed,
        if direct_io { "on" } else { "off" }
    );
    if args.quick {
        println!("--quick: fixtures are smaller than the titles say (see the JSON)");
    }
    for n in &runner.notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        let kernel = env::output(env::cmd("uname", &["-r"]))?.trim().to_string();
        let date = env::output(env::cmd("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?
            .trim()
            .to_string();
        let json = serde_json::json!({
            "date": date,
            "command": command.join(" "),
            "machine": {
                "kernel": kernel,
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "cpu_idle": cpu_idle,
                "scratch_loop_direct_io": direct_io,
            },
            "reps": reps,
            "quick": args.quick,
            "elapsed_seconds": elapsed,
            "rfs": rfs,
            "rfs_version": env::output(env::cmd(rfs.to_str().unwrap_or("rfs"), &["--version"]))
                .map(|v| v.trim().to_string())
                .unwrap_or_default(),
            "source": source_state(),
            "randread_tool": runner.randread_tool(),
            "fixtures": fx.summary,
            "view_check": view_check,
            "notes": runner.notes,
            "workloads": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    drop(runner);
    drop(mounter);
    if let Err(e) = env::remove_tree(&scratch.fs.join("run")) {
        eprintln!("warning: {e:#}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Walks the 3-layer tree once on every system and compares the entry counts with the host
/// copy (which the kernel made): a union that merges differently is measured on different
/// work, and that is worth knowing.
fn check_views(m: &Mounter, tree: &Stack, systems: &[System]) -> Result<serde_json::Value> {
    let mut counts = serde_json::Map::new();
    let host = workloads::stat_walk(&tree.host)?;
    for &sys in systems {
        let upper = if sys == System::Host {
            Upper::Fresh
        } else {
            m.prepare_upper(sys)?
        };
        let view = m.mount(sys, tree, &upper)?;
        let n = workloads::stat_walk(&view.root)?;
        view.close()?;
        if n != host {
            eprintln!(
                "warning: {} shows {n} entries in the 3-layer tree, the kernel's merge has {host}",
                sys.name()
            );
        }
        counts.insert(sys.name().into(), n.into());
    }
    Ok(serde_json::Value::Object(counts))
}

/// The git commit of the source tree this harness was built from, and whether the work
/// tree had uncommitted changes when the benchmark ran.
fn source_state() -> serde_json::Value {
    let dir = env!("CARGO_MANIFEST_DIR");
    let commit = env::output(env::cmd("git", &["-C", dir, "rev-parse", "HEAD"]))
        .map(|s| s.trim().to_string())
        .ok();
    let dirty = env::output(env::cmd("git", &["-C", dir, "status", "--porcelain"]))
        .map(|s| !s.trim().is_empty())
        .ok();
    serde_json::json!({ "commit": commit, "dirty": dirty })
}

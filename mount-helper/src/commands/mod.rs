//! One module per subcommand; `run` dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command};

mod build;
mod doctor;
mod exec;
mod info;
pub(crate) mod init;
mod lifecycle;
mod logs;
mod mount;
mod ps;
mod rm;
pub(crate) mod run;
mod store;
pub(crate) mod umount;

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Mount(args) => mount::run(cli.root, args),
        Command::Umount(args) => umount::run(cli.root, &args),
        Command::Mounts(args) => store::mounts(cli.root, &args),
        Command::Run(args) => run::run(cli.root, args),
        Command::Ps(args) => ps::run(cli.root, &args),
        Command::Rm(args) => rm::run(cli.root, &args),
        Command::Stop(args) => lifecycle::stop(cli.root, &args),
        Command::Start(args) => run::start(cli.root, &args),
        Command::Restart(args) => lifecycle::restart(cli.root, &args),
        Command::Kill(args) => lifecycle::kill(cli.root, &args),
        Command::Wait(args) => lifecycle::wait(cli.root, &args),
        Command::Port(args) => lifecycle::port(cli.root, &args),
        Command::Top(args) => lifecycle::top(cli.root, &args),
        Command::Logs(args) => logs::run(cli.root, &args),
        Command::Exec(args) => exec::run(cli.root, &args),
        Command::Load(args) => store::load(cli.root, &args),
        Command::Import(args) => store::import(cli.root, &args),
        Command::Tag(args) => store::tag(cli.root, &args),
        Command::Images(args) => store::images(cli.root, &args),
        Command::Rmi(args) => store::rmi(cli.root, &args),
        Command::Prune(args) => store::prune(cli.root, &args),
        Command::Builder(args) => match args.command {
            crate::cli::BuilderCommand::Prune(_) => store::builder_prune(cli.root),
        },
        Command::History(args) => store::history(cli.root, &args),
        Command::Inspect(args) => store::inspect(cli.root, &args),
        Command::Diff(args) => store::diff(cli.root, &args),
        Command::Commit(args) => store::commit(cli.root, &args),
        Command::Build(args) => build::run(cli.root, &args),
        Command::Save(args) => store::save(cli.root, &args),
        Command::Export(args) => store::export(cli.root, &args),
        Command::Cp(args) => store::cp(cli.root, &args),
        Command::Pull(args) => store::pull(cli.root, &args),
        Command::Push(args) => store::push(cli.root, &args),
        Command::Login(args) => store::login(&args),
        Command::Logout(args) => store::logout(&args),
        Command::Doctor => doctor::run(&root_dir(cli.root)?),
        Command::Info(args) => info::run(cli.root, &args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(shell, &mut cmd, "rfs", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(&dir),
    }
}

/// Writes `rfs.1` and `rfs-<command>.1` into `dir`.
fn man(dir: &std::path::Path) -> Result<ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = crate::cli::Cli::command();
    let write = |name: String, c: clap::Command| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        write(
            format!("rfs-{}", sub.get_name()),
            sub.clone().name(format!("rfs-{}", sub.get_name())),
        )?;
    }
    write("rfs".into(), cmd)?;
    Ok(ExitCode::SUCCESS)
}

/// `rfs mount` with arguments built elsewhere (the fuse-overlayfs compatible invocation).
pub(crate) fn mount_with(root: Option<PathBuf>, args: crate::cli::MountArgs) -> Result<ExitCode> {
    mount::run(root, args)
}

/// rfs's root directory: `--root`/`RFS_ROOT`, else `$XDG_DATA_HOME/rfs`, else
/// `~/.local/share/rfs`. Created if missing.
pub(crate) fn root_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let root = root_path(explicit)?;
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating root directory {}", root.display()))?;
    std::fs::canonicalize(&root).with_context(|| format!("resolving {}", root.display()))
}

/// Where rfs's root directory is (see [`root_dir`]), without creating it.
pub(crate) fn root_path(explicit: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match explicit {
        Some(r) => r,
        None => match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("rfs"),
            None => {
                let home = std::env::var_os("HOME")
                    .context("neither --root, RFS_ROOT, XDG_DATA_HOME nor HOME is set")?;
                PathBuf::from(home).join(".local/share/rfs")
            }
        },
    })
}

/// The layers of an image SOURCE, bottom first, indexed (and cached under `root`). SOURCE is
/// an image file or layout; a SOURCE that is no existing path names an image of the store
/// (`NAME[:TAG]` or an ID prefix). Store blobs the layers use stay leased (safe from
/// `rfs prune`) while this process runs.
pub(crate) fn image_layers(
    root: &std::path::Path,
    source: &std::path::Path,
    platform: Option<&str>,
) -> Result<Vec<rfs_fs::lower::LayerInput>> {
    Ok(store::open_image(root, source, platform)?.layers)
}

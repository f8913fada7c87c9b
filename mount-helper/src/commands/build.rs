//! `rfs build [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]... [--target STAGE]
//! [--no-cache] [-q] CONTEXT`: the step runner over [`rfs_fs::build`].
//!
//! Steps stack as layers in the store, as Docker's do: each stage starts from its base's
//! layers; a `RUN` runs in the `rfs run` sandbox (`super::run::run_build_step`) over a union
//! of the layers so far with a fresh upper, and `COPY`/`ADD` write the context's files into a
//! fresh upper directly ([`rfs_fs::build::copy`]); either upper becomes a layer through the
//! code of `rfs commit` ([`Store::store_layer`]), or no layer at all when it changed nothing
//! (`empty_layer` history, as Docker's builder). Metadata instructions edit the config and add
//! `empty_layer` history. `created_by` reads as Docker's and buildah's (`/bin/sh -c #(nop) ...`).
//!
//! The cache: each step's key is the digest of its parent's key, its instruction after
//! expansion (with, for `COPY`/`ADD`, the content digest of what it copies, and for `RUN`, its
//! environment); `<root>/build-cache/<key>.json` ([`rfs_fs::store::BUILD_CACHE_DIR`])
//! records the step's layer and history entry. A hit reuses both (so an unchanged rebuild
//! gives the same config, hence the same image, and adds nothing); a step whose layer is gone
//! from the store is run again.
//!
//! Per-step directories live in `<root>/build/<pid>-<n>/` and are removed when the step ends,
//! also when it fails; the step's mounts live in its sandbox, which dies with it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};

use rfs_fs::build::config as cfgops;
use rfs_fs::build::copy::{self, Plan};
use rfs_fs::build::expand::expand_word;
use rfs_fs::build::ignore::Ignore;
use rfs_fs::build::parse::{self, CommandForm, Instruction, Keyword};
use rfs_fs::build::stages::{self, Stage};
use rfs_fs::build::vars::{Given, Globals, StageVars};
use rfs_fs::build::volume;
use rfs_fs::digest::Digest;
use rfs_fs::image::model::{ContainerConfig, Healthcheck};
use rfs_fs::lower::{LayerInput, LowerTree};
use rfs_fs::store::{Lease, Store, Timestamp, UpperOwners};
use rfs_fs::union::{Ownership, UnionConfig, UnionFs, UpperDirs};

use crate::cli::BuildArgs;

/// A Dockerfile larger than this is refused (Docker's own limit is in the same range).
const MAX_DOCKERFILE: u64 = 4 << 20;

/// The `PATH` of a command whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `rfs build`.
pub(crate) fn run(root: Option<PathBuf>, args: &BuildArgs) -> Result<ExitCode> {
    let root = super::root_dir(root)?;
    let store = Store::open(&root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    // Ctrl-C (SIGINT), SIGTERM and SIGHUP stay blocked for the whole build: a RUN's wait
    // takes them (and kills the step), and each step checks for one first, so an interrupted
    // build still removes what it made.
    rfs_runner::process::block_signals(&[]).context("blocking signals")?;
    let mut b = Builder::new(&root, store, args)?;
    let id = b.build();
    wait_for_removals();
    let id = id?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{id}")?;
    Ok(ExitCode::SUCCESS)
}

/// A finished (or growing) stage: the image it makes.
#[derive(Clone)]
struct Image {
    /// The base's config object, for the fields rfs does not edit (architecture, os, ...).
    object: Map<String, Value>,
    cfg: ContainerConfig,
    diff_ids: Vec<Digest>,
    history: Vec<Value>,
    /// The store image the stage started from.
    parent: Option<Digest>,
    /// The cache key of the last step.
    key: String,
}

impl Image {
    fn scratch(given: &Given) -> Image {
        let mut object = Map::new();
        let get = |k: &str| given.predefined.get(k).cloned().unwrap_or_default();
        object.insert("architecture".into(), json!(get("TARGETARCH")));
        object.insert("os".into(), json!(get("TARGETOS")));
        if !get("TARGETVARIANT").is_empty() {
            object.insert("variant".into(), json!(get("TARGETVARIANT")));
        }
        Image {
            object,
            cfg: ContainerConfig::default(),
            diff_ids: Vec::new(),
            history: Vec::new(),
            parent: None,
            key: sha256_hex(b"scratch"),
        }
    }

    /// The config JSON of the image as it stands.
    fn config_bytes(&self, created: &str) -> Result<Vec<u8>> {
        let mut o = self.object.clone();
        for k in [
            "container",
            "container_config",
            "docker_version",
            "comment",
            "author",
        ] {
            o.remove(k);
        }
        let created = self
            .history
            .last()
            .and_then(|h| h.get("created").cloned())
            .unwrap_or_else(|| json!(created));
        o.insert("created".into(), created);
        o.insert("config".into(), serde_json::to_value(&self.cfg)?);
        o.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": self.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
        );
        o.insert("history".into(), Value::Array(self.history.clone()));
        Ok(serde_json::to_vec(&o)?)
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Digest::of_bytes(bytes).hex().to_string()
}

/// What the cache keeps of a step.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    diff_id: Option<String>,
    history: Value,
}

/// One build.
struct Builder<'a> {
    root: PathBuf,
    store: Store,
    args: &'a BuildArgs,
    dockerfile: PathBuf,
    context: PathBuf,
    ignore: Ignore,
    escape: char,
    given: Given,
    /// Step counter and total, for `STEP n/m`.
    step: usize,
    total: usize,
    /// The store blobs this build made or uses, safe from `rfs prune` while it runs.
    leases: Vec<Lease>,
    dirs: usize,
    as_root: bool,
    /// `--timestamp` or `SOURCE_DATE_EPOCH`: the time of every history entry and file.
    timestamp: Option<i64>,
}

/// A step's directory, removed when dropped: renamed aside at once, and deleted by an `rm`
/// process that runs while the next steps do (deleting thousands of files can take seconds);
/// [`wait_for_removals`] waits for those before the build ends.
struct StepDir(PathBuf);

/// The `rm` processes deleting step directories.
static REMOVALS: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

impl Drop for StepDir {
    fn drop(&mut self) {
        let mut gone = self.0.clone().into_os_string();
        gone.push(".removing");
        let gone = PathBuf::from(gone);
        if std::fs::rename(&self.0, &gone).is_err() {
            let _ = std::fs::remove_dir_all(&self.0);
            return;
        }
        let child = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&gone)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(c) => REMOVALS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(c),
            Err(_) => {
                let _ = std::fs::remove_dir_all(&gone);
            }
        }
    }
}

/// Waits until every step directory is deleted.
fn wait_for_removals() {
    let children = std::mem::take(
        &mut *REMOVALS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for mut c in children {
        let _ = c.wait();
    }
}

impl<'a> Builder<'a> {
    fn new(root: &Path, store: Store, args: &'a BuildArgs) -> Result<Builder<'a>> {
        let context = std::fs::canonicalize(&args.context)
            .with_context(|| format!("build context {}", args.context.display()))?;
        if !context.is_dir() {
            bail!("build context {}: not a directory", args.context.display());
        }
        let dockerfile = args
            .file
            .clone()
            .unwrap_or_else(|| context.join("Dockerfile"));
        // `Dockerfile.dockerignore` beside the Dockerfile wins over the context's.
        let mut ignore_file = dockerfile.clone().into_os_string();
        ignore_file.push(".dockerignore");
        let ignore_file = PathBuf::from(ignore_file);
        let ignore_file = if ignore_file.is_file() {
            ignore_file
        } else {
            context.join(".dockerignore")
        };
        let ignore = match std::fs::read(&ignore_file) {
            Ok(bytes) => Ignore::parse(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", ignore_file.display())),
        };
        let mut given = Given::default();
        for kv in &args.build_arg {
            let (k, v) = match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match std::env::var(kv) {
                    Ok(v) => (kv.clone(), v),
                    Err(_) => continue,
                },
            };
            given.build_args.insert(k, v);
        }
        let arch = host_arch();
        let target = match &args.platform {
            Some(p) => {
                let parts: Vec<&str> = p.split('/').collect();
                match parts.as_slice() {
                    [os, a] if !os.is_empty() && !a.is_empty() => {
                        (os.to_string(), a.to_string(), String::new())
                    }
                    [os, a, v] if !os.is_empty() && !a.is_empty() => {
                        (os.to_string(), a.to_string(), v.to_string())
                    }
                    _ => bail!("--platform {p}: expected OS/ARCH[/VARIANT]"),
                }
            }
            None => ("linux".to_string(), arch.to_string(), String::new()),
        };
        let target_platform = if target.2.is_empty() {
            format!("{}/{}", target.0, target.1)
        } else {
            format!("{}/{}/{}", target.0, target.1, target.2)
        };
        for (k, v) in [
            ("TARGETPLATFORM", target_platform),
            ("TARGETOS", target.0.clone()),
            ("TARGETARCH", target.1.clone()),
            ("TARGETVARIANT", target.2.clone()),
            ("BUILDPLATFORM", format!("linux/{arch}")),
            ("BUILDOS", "linux".to_string()),
            ("BUILDARCH", arch.to_string()),
            ("BUILDVARIANT", String::new()),
        ] {
            given.predefined.insert(k.to_string(), v);
        }
        // Step directories of builds that died (killed, Ctrl-C) go now.
        sweep_step_dirs(&root.join("build"));
        Ok(Builder {
            root: root.to_owned(),
            store,
            args,
            dockerfile,
            context,
            ignore,
            escape: '\\',
            given,
            step: 0,
            total: 0,
            leases: Vec::new(),
            dirs: 0,
            as_root: nix::unistd::geteuid().is_root(),
            timestamp: args.timestamp.or_else(|| {
                std::env::var("SOURCE_DATE_EPOCH")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            }),
        })
    }

    /// When a step happened, as history records it.
    fn created(&self) -> String {
        match self.timestamp {
            Some(secs) => Timestamp { secs, nanos: 0 },
            None => Timestamp::now(),
        }
        .to_rfc3339_nano()
    }

    fn say(&self, text: &str) {
        if !self.args.quiet {
            println!("{text}");
        }
    }

    /// Where in the Dockerfile, for errors.
    fn at(&self, line: usize) -> String {
        format!("{} line {line}", self.dockerfile.display())
    }

    fn build(&mut self) -> Result<String> {
        // A bad name fails before any step runs.
        let tags = self
            .args
            .tag
            .iter()
            .map(|t| super::store::reference(t).with_context(|| format!("-t {t}")))
            .collect::<Result<Vec<_>>>()?;
        let bytes = copy::read_small(&self.dockerfile, MAX_DOCKERFILE + 1)
            .with_context(|| format!("reading {}", self.dockerfile.display()))?;
        if bytes.len() as u64 > MAX_DOCKERFILE {
            bail!(
                "{}: larger than {} MiB; is it a Dockerfile?",
                self.dockerfile.display(),
                MAX_DOCKERFILE >> 20
            );
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| anyhow!("{}: not UTF-8 text ({e})", self.dockerfile.display()))?;
        let df = parse::parse(&text).map_err(|e| anyhow!("{}: {e}", self.dockerfile.display()))?;
        self.escape = df.escape;
        let st = stages::split(&df.instructions, df.escape)
            .map_err(|e| anyhow!("{}: {e}", self.dockerfile.display()))?;
        let target = st
            .target(self.args.target.as_deref())
            .map_err(|e| anyhow!("{}: {e}", self.dockerfile.display()))?;
        let needed = st.needed(target, df.escape);
        self.total = needed.iter().map(|&i| 1 + st.stages[i].body.len()).sum();

        let mut globals = Globals::new(&self.given);
        for inst in &st.global_args {
            for (name, default) in arg_decls(&inst.args, self.escape) {
                globals
                    .declare(&self.given, &name, default.as_deref(), self.escape)
                    .map_err(|e| anyhow!("{}: {e}", self.at(inst.line)))?;
            }
        }
        let mut built: HashMap<usize, Image> = HashMap::new();
        for &i in &needed {
            let image = self.stage(&st.stages, i, &globals, &built)?;
            built.insert(i, image);
        }
        let mut image = built
            .remove(&target)
            .ok_or_else(|| anyhow!("the target stage was not built"))?;
        // `--label`: one more LABEL step on the target, as Docker's builder adds it.
        if !self.args.label.is_empty() {
            let mut pairs = Vec::new();
            for kv in &self.args.label {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k.is_empty() {
                    bail!("--label {kv}: expected KEY=VALUE");
                }
                pairs.push((k.to_string(), v.to_string()));
            }
            cfgops::labels(&mut image.cfg, &pairs);
            let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            self.meta_step(
                &mut image,
                format!("/bin/sh -c #(nop)  LABEL {}", shown.join(" ")),
            )?;
        }
        if self.args.squash {
            self.squash(&mut image)?;
        }
        let config = image.config_bytes(&self.created())?;
        let id = self
            .store
            .add_built_image(&config, &image.diff_ids, &tags, image.parent)
            .context("storing the built image")?;
        for t in &tags {
            self.say(&format!("Successfully tagged {t}"));
        }
        Ok(id.to_string())
    }

    /// The base of a stage: an earlier stage, `scratch`, an image file, or a store image.
    fn base(
        &mut self,
        stage: &Stage,
        all: &[Stage],
        index: usize,
        globals: &Globals,
        built: &HashMap<usize, Image>,
        what: &str,
    ) -> Result<Image> {
        let name = expand_word(&stage.base, globals.values(), self.escape)
            .map_err(|e| anyhow!("{}: {what}: {e}", self.at(stage.line)))?;
        if let Some(j) = all[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(name.to_ascii_lowercase().as_str()))
            .or_else(|| name.parse::<usize>().ok().filter(|&j| j < index))
        {
            return built
                .get(&j)
                .cloned()
                .ok_or_else(|| anyhow!("{}: stage {name} was not built", self.at(stage.line)));
        }
        if name == "scratch" {
            return Ok(Image::scratch(&self.given));
        }
        let from_context = Path::new(&name).is_relative() && self.context.join(&name).exists();
        let text = if from_context {
            self.context.join(&name).display().to_string()
        } else {
            name.clone()
        };
        let image = if Path::new(&text).exists() {
            let platform = match &stage.platform {
                Some(p) => Some(
                    expand_word(p, globals.values(), self.escape)
                        .map_err(|e| anyhow!("{}: --platform: {e}", self.at(stage.line)))?,
                ),
                None => self.args.platform.clone(),
            };
            super::store::image_in_store(&self.store, &text, platform.as_deref())
                .with_context(|| format!("{}: {what} {name}", self.at(stage.line)))?
        } else {
            let qualified = rfs_fs::registry::ImageRef::is_qualified(&text);
            // `--pull`: a base that names its registry is pulled even when it is here.
            let found = if self.args.pull && qualified {
                Err(rfs_fs::store::Error::NoSuchImage {
                    reference: text.clone(),
                })
            } else {
                self.store.find(&text)
            };
            match found {
                Ok(i) => i,
                // A reference that names its registry is pulled, as Docker's builder does.
                Err(rfs_fs::store::Error::NoSuchImage { .. }) if qualified => {
                    self.say(&format!("Pulling {text}"));
                    let registry = crate::cli::RegistryArgs {
                        tls_verify: None,
                        cert_dir: None,
                    };
                    let pulled = super::store::pull::pull(
                        &self.store,
                        &text,
                        super::store::pull::Platforms::One(stage.platform.as_deref()),
                        &registry,
                        true,
                    )
                    .with_context(|| format!("{}: {what} {name}", self.at(stage.line)))?;
                    self.store.find(&pulled.id.to_string())?
                }
                Err(
                    rfs_fs::store::Error::NoSuchImage { .. } | rfs_fs::store::Error::Reference(_),
                ) => bail!(
                    "{}: {what} {name}: no stage of that name before it, and not in the \
                     store; `rfs pull` it (or `rfs load` an archive)",
                    self.at(stage.line),
                ),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: {what} {name}", self.at(stage.line)));
                }
            }
        };
        self.leases.push(
            self.store
                .lease("rfs build", &Store::blobs_of(&image))
                .context("leasing the base image")?,
        );
        let bytes = std::fs::read(self.store.blob_path(&image.id))
            .with_context(|| format!("reading the config of {name}"))?;
        let object: Map<String, Value> =
            serde_json::from_slice(&bytes).with_context(|| format!("the config of {name}"))?;
        let history = object
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(Image {
            cfg: image.config.config.clone().unwrap_or_default(),
            diff_ids: image.diff_ids.clone(),
            history,
            parent: Some(image.id),
            key: sha256_hex(image.id.to_string().as_bytes()),
            object,
        })
    }

    fn stage(
        &mut self,
        all: &[Stage],
        index: usize,
        globals: &Globals,
        built: &HashMap<usize, Image>,
    ) -> Result<Image> {
        let stage = &all[index];
        self.step += 1;
        let from_line = match &stage.name {
            Some(n) => format!("FROM {} AS {n}", stage.base),
            None => format!("FROM {}", stage.base),
        };
        self.say(&format!("STEP {}/{}: {from_line}", self.step, self.total));
        let mut image = self.base(stage, all, index, globals, built, "FROM")?;
        if let Some(t) = self.timestamp {
            image.key = step_key(&image.key, &format!("--timestamp {t}"));
        }
        // As Docker's builder: a stage whose base sets no PATH gets the default one.
        let has_path = image
            .cfg
            .env
            .iter()
            .flatten()
            .any(|kv| kv.starts_with("PATH="));
        if !has_path {
            cfgops::set_env(&mut image.cfg, "PATH", DEFAULT_PATH);
        }
        let mut vars = StageVars::new(image.cfg.env.as_deref().unwrap_or_default());
        // ONBUILD triggers of the base run first, as Docker does.
        let triggers = image.cfg.on_build.take().unwrap_or_default();
        let mut body: Vec<Instruction> = Vec::new();
        for t in &triggers {
            let df = parse::parse(t).map_err(|e| {
                anyhow!("{}: ONBUILD trigger of the base: {e}", self.at(stage.line))
            })?;
            body.extend(df.instructions.into_iter().map(|mut i| {
                i.line = stage.line;
                i
            }));
        }
        if !triggers.is_empty() {
            self.total += body.len();
        }
        body.extend(stage.body.iter().cloned());
        for inst in &body {
            if let Some(sig) = pending_interrupt() {
                bail!("interrupted by {sig}");
            }
            self.step += 1;
            self.say(&format!(
                "STEP {}/{}: {} {}",
                self.step, self.total, inst.keyword, inst.args
            ));
            self.instruction(inst, &mut image, &mut vars, globals, all, index, built)
                .with_context(|| {
                    format!(
                        "STEP {}/{}: {} ({} line {})",
                        self.step,
                        self.total,
                        inst.keyword,
                        self.dockerfile.display(),
                        inst.line
                    )
                })?;
        }
        Ok(image)
    }

    fn expand(&self, word: &str, vars: &StageVars) -> Result<String> {
        Ok(expand_word(word, &vars.values(), self.escape)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn instruction(
        &mut self,
        inst: &Instruction,
        image: &mut Image,
        vars: &mut StageVars,
        globals: &Globals,
        all: &[Stage],
        index: usize,
        built: &HashMap<usize, Image>,
    ) -> Result<()> {
        let esc = self.escape;
        let line = inst.line;
        let nop = |text: String| format!("/bin/sh -c #(nop) {text}");
        match inst.keyword {
            Keyword::Env => {
                let mut shown = Vec::new();
                for (k, v) in parse::name_values(&inst.args, esc, line)? {
                    let k = self.expand(&k, vars)?;
                    let v = self.expand(&v, vars)?;
                    cfgops::set_env(&mut image.cfg, &k, &v);
                    vars.set_env(&k, &v);
                    shown.push(format!("{k}={v}"));
                }
                self.meta_step(image, nop(format!(" ENV {}", shown.join(" "))))
            }
            Keyword::Arg => {
                let mut shown = Vec::new();
                for (name, default) in arg_decls(&inst.args, esc) {
                    vars.declare_arg(&self.given, globals, &name, default.as_deref(), esc)?;
                    shown.push(match default {
                        Some(d) => format!("{name}={d}"),
                        None => name,
                    });
                }
                self.meta_step(image, nop(format!(" ARG {}", shown.join(" "))))
            }
            Keyword::Label => {
                let mut pairs = Vec::new();
                for (k, v) in parse::name_values(&inst.args, esc, line)? {
                    pairs.push((self.expand(&k, vars)?, self.expand(&v, vars)?));
                }
                cfgops::labels(&mut image.cfg, &pairs);
                let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.meta_step(image, nop(format!(" LABEL {}", shown.join(" "))))
            }
            Keyword::Maintainer => {
                let who = inst.args.trim().to_string();
                image.object.insert("author".into(), json!(who));
                self.meta_step(image, nop(format!(" MAINTAINER {who}")))
            }
            Keyword::User => {
                let user = self.expand(inst.args.trim(), vars)?;
                image.cfg.user = Some(user.clone());
                self.meta_step(image, nop(format!(" USER {user}")))
            }
            Keyword::Stopsignal => {
                let sig = self.expand(inst.args.trim(), vars)?;
                image.cfg.stop_signal = Some(sig.clone());
                self.meta_step(image, nop(format!(" STOPSIGNAL {sig}")))
            }
            Keyword::Expose => {
                let ports = words(&inst.args, esc)
                    .iter()
                    .map(|w| self.expand(w, vars))
                    .collect::<Result<Vec<_>>>()?;
                cfgops::expose(&mut image.cfg, &ports);
                self.meta_step(image, nop(format!(" EXPOSE {}", ports.join(" "))))
            }
            Keyword::Volume => {
                let paths = match parse::command_form(&inst.args) {
                    CommandForm::Exec(list) => list,
                    CommandForm::Shell(_) => words(&inst.args, esc),
                };
                let paths = paths
                    .iter()
                    .map(|w| self.expand(w, vars))
                    .collect::<Result<Vec<_>>>()?;
                if paths.is_empty() {
                    bail!("VOLUME needs at least one path");
                }
                cfgops::volumes(&mut image.cfg, &paths);
                self.meta_step(image, nop(format!(" VOLUME [{}]", paths.join(" "))))
            }
            Keyword::Cmd => {
                let form = parse::command_form(&inst.args);
                let argv = cfgops::argv(&image.cfg, &form);
                image.cfg.cmd = Some(argv.clone());
                self.meta_step(image, nop(format!(" CMD {}", go_list(&argv))))
            }
            Keyword::Entrypoint => {
                let form = parse::command_form(&inst.args);
                cfgops::entrypoint(&mut image.cfg, &form);
                let argv = image.cfg.entrypoint.clone().unwrap_or_default();
                self.meta_step(image, nop(format!(" ENTRYPOINT {}", go_list(&argv))))
            }
            Keyword::Shell => match parse::command_form(&inst.args) {
                CommandForm::Exec(argv) if !argv.is_empty() => {
                    image.cfg.shell = Some(argv.clone());
                    self.meta_step(image, nop(format!(" SHELL {}", go_list(&argv))))
                }
                _ => bail!(
                    "SHELL requires a JSON array of strings, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                ),
            },
            Keyword::Onbuild => {
                let trigger = inst.args.trim().to_string();
                let first = trigger.split_whitespace().next().unwrap_or("");
                if matches!(
                    first.to_ascii_uppercase().as_str(),
                    "ONBUILD" | "FROM" | "MAINTAINER"
                ) {
                    bail!("ONBUILD {first} is not allowed");
                }
                image
                    .cfg
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(trigger.clone());
                self.meta_step(image, nop(format!(" ONBUILD {trigger}")))
            }
            Keyword::Healthcheck => {
                image.cfg.healthcheck = Some(healthcheck(&inst.args)?);
                self.meta_step(image, nop(format!(" HEALTHCHECK {}", inst.args.trim())))
            }
            Keyword::Workdir => {
                let dir = self.expand(inst.args.trim(), vars)?;
                if dir.is_empty() {
                    bail!("WORKDIR needs a directory");
                }
                cfgops::workdir(&mut image.cfg, &dir);
                let wd = image.cfg.working_dir.clone().unwrap_or_else(|| "/".into());
                let created_by = nop(format!("WORKDIR {wd}"));
                let key = step_key(&image.key, &created_by);
                if self.cached(image, &key)? {
                    return Ok(());
                }
                let below = self.lower(image)?;
                let dir = self.step_dir()?;
                let upper = dir.0.join("upper");
                std::fs::create_dir_all(&upper)?;
                let real = copy::resolve_in_image(&below, Path::new(&wd));
                if below.lookup_path(real.as_os_str().as_bytes()).is_none() {
                    copy::make_dir(&upper, &real, &below, self.as_root)?;
                }
                self.layer_step(image, &below, &upper, None, created_by, key)
            }
            Keyword::Run => self.run_step(inst, image, vars),
            Keyword::Copy | Keyword::Add => {
                self.copy_step(inst, image, vars, all, index, built, globals)
            }
            Keyword::From => bail!("FROM inside a stage"),
        }
    }

    /// A step that changes only the config: history without a layer.
    fn meta_step(&mut self, image: &mut Image, created_by: String) -> Result<()> {
        let key = step_key(
            &image.key,
            &format!("{created_by}\n{}", cfg_digest(&image.cfg)),
        );
        if self.cached(image, &key)? {
            return Ok(());
        }
        let entry = json!({
            "created": self.created(),
            "created_by": created_by,
            "empty_layer": true,
        });
        self.record(image, key, None, entry)
    }

    /// Takes a step from the cache, if it is there (and its layer still is).
    fn cached(&mut self, image: &mut Image, key: &str) -> Result<bool> {
        if self.args.no_cache {
            return Ok(false);
        }
        let path = self
            .root
            .join(rfs_fs::store::BUILD_CACHE_DIR)
            .join(format!("{key}.json"));
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(false);
        };
        let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) else {
            return Ok(false);
        };
        let diff_id = match entry.diff_id.as_deref().map(Digest::parse) {
            None => None,
            Some(Ok(d)) if self.store.blob_path(&d).is_file() => Some(d),
            Some(_) => return Ok(false),
        };
        if let Some(d) = diff_id {
            self.leases.push(self.store.lease("rfs build", &[d])?);
            image.diff_ids.push(d);
        }
        image.history.push(entry.history);
        image.key = key.to_string();
        self.say(&format!("--> Using cache {}", &key[..12]));
        Ok(true)
    }

    /// Records a step's result in the image and the cache.
    fn record(
        &mut self,
        image: &mut Image,
        key: String,
        diff_id: Option<Digest>,
        entry: Value,
    ) -> Result<()> {
        if let Some(d) = diff_id {
            image.diff_ids.push(d);
        }
        image.history.push(entry.clone());
        let dir = self.root.join(rfs_fs::store::BUILD_CACHE_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cache = CacheEntry {
            diff_id: diff_id.map(|d| d.to_string()),
            history: entry,
        };
        let path = dir.join(format!("{key}.json"));
        let tmp = dir.join(format!(".{key}.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&cache)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing the build cache {}", path.display()))?;
        self.say(&format!("--> {}", &key[..12]));
        image.key = key;
        Ok(())
    }

    fn step_dir(&mut self) -> Result<StepDir> {
        self.dirs += 1;
        let dir = self
            .root
            .join("build")
            .join(format!("{}-{}", std::process::id(), self.dirs));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(StepDir(dir))
    }

    /// `--squash`: the layers the build added to its base, replayed through the engine over a
    /// fresh upper on the base (`rfs_fs::build::squash`), become one layer made by the commit
    /// code; the history keeps every step, all but the last of the squashed ones empty.
    fn squash(&mut self, image: &mut Image) -> Result<()> {
        let base_len = match image.parent {
            Some(p) => self.store.find(&p.to_string())?.diff_ids.len(),
            None => 0,
        };
        let added = image.diff_ids.get(base_len..).unwrap_or_default().to_vec();
        if added.len() < 2 {
            return Ok(());
        }
        self.say(&format!("Squashing {} layers into one", added.len()));
        let mut base = image.clone();
        base.diff_ids.truncate(base_len);
        let dir = self.step_dir()?;
        let (upper, work) = (dir.0.join("upper"), dir.0.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The union is this process's: rootless, its files are the build's root's (uid 0 in
        // the layers), as a RUN step's server records them.
        let (ownership, own_ids_on_disk) = match Ownership::of_process() {
            Ownership::Host => (Ownership::Host, None),
            Ownership::Override { own_uid, own_gid } => (
                Ownership::Override {
                    own_uid: 0,
                    own_gid: 0,
                },
                Some((own_uid, own_gid)),
            ),
        };
        {
            let fs = UnionFs::with_config(
                self.lower(&base)?,
                Some(UpperDirs {
                    upper: upper.clone(),
                    work,
                }),
                UnionConfig {
                    ownership,
                    markers: Some(rfs_fs::ovl::Namespace::User),
                    own_ids_on_disk,
                },
            )
            .context("opening the squash's upper")?;
            for diff_id in &added {
                let blob = self.store.blob_path(diff_id);
                let file = std::fs::File::open(&blob)
                    .with_context(|| format!("reading layer {diff_id}"))?;
                rfs_fs::build::squash::apply_layer(&fs, std::io::BufReader::new(file))
                    .with_context(|| format!("squashing layer {diff_id}"))?;
            }
        }
        if let Some(secs) = self.timestamp {
            set_times(&upper, secs).context("setting the layer's file times")?;
        }
        let owners = UpperOwners {
            root: Some((
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )),
        };
        let below = self.lower(&base)?;
        let (diff_id, _, _) = self
            .store
            .store_layer(&below, &upper, owners, None)
            .context("writing the squashed layer")?;
        self.leases.push(self.store.lease("rfs build", &[diff_id])?);
        image.diff_ids.truncate(base_len);
        image.diff_ids.push(diff_id);
        // The steps stay in the history; only the last that made a layer keeps one.
        let mut layers_seen = 0;
        let mut last_squashed = None;
        for (i, h) in image.history.iter().enumerate() {
            if h.get("empty_layer").and_then(Value::as_bool) != Some(true) {
                if layers_seen >= base_len {
                    last_squashed = Some(i);
                }
                layers_seen += 1;
            }
        }
        let mut layers_seen = 0;
        for (i, h) in image.history.iter_mut().enumerate() {
            if h.get("empty_layer").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if layers_seen >= base_len && Some(i) != last_squashed {
                if let Some(o) = h.as_object_mut() {
                    o.insert("empty_layer".into(), json!(true));
                }
            }
            layers_seen += 1;
        }
        Ok(())
    }

    fn layer_inputs(&self, image: &Image) -> Result<Vec<LayerInput>> {
        image
            .diff_ids
            .iter()
            .map(|d| {
                Ok(LayerInput::Tar {
                    file: self.store.blob_path(d),
                    offset: 0,
                    index: self.store.layer_index(d)?,
                })
            })
            .collect()
    }

    fn lower(&self, image: &Image) -> Result<LowerTree> {
        LowerTree::build(self.layer_inputs(image)?).context("merging the layers so far")
    }

    /// Turns `upper` (over `below`) into the step's layer, or into none if it changed
    /// nothing.
    fn layer_step(
        &mut self,
        image: &mut Image,
        below: &LowerTree,
        upper: &Path,
        owners: Option<UpperOwners>,
        created_by: String,
        key: String,
    ) -> Result<()> {
        let owners = owners.unwrap_or(UpperOwners {
            root: Some((
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )),
        });
        if let Some(secs) = self.timestamp {
            set_times(upper, secs).context("setting the layer's file times")?;
        }
        let changes =
            rfs_fs::store::diff(below, upper, owners).context("reading the step's changes")?;
        let created = self.created();
        if changes.is_empty() {
            let entry = json!({"created": created, "created_by": created_by, "empty_layer": true});
            return self.record(image, key, None, entry);
        }
        let (diff_id, _, _) = self
            .store
            .store_layer(below, upper, owners, None)
            .context("writing the step's layer")?;
        self.leases.push(self.store.lease("rfs build", &[diff_id])?);
        let entry = json!({"created": created, "created_by": created_by});
        self.record(image, key, Some(diff_id), entry)
    }

    fn run_step(&mut self, inst: &Instruction, image: &mut Image, vars: &StageVars) -> Result<()> {
        let mut rest = inst.args.trim_start();
        let mut network = rfs_runner::spec::Network::Host;
        while let Some(flag) = rest.strip_prefix("--") {
            let (word, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
            match word.split_once('=') {
                Some(("network", "default" | "host")) => {}
                Some(("network", "none")) => network = rfs_runner::spec::Network::None,
                _ => bail!("RUN --{word}: not supported by rfs build"),
            }
            rest = after.trim_start();
        }
        let argv = if let Some(doc) = inst.heredocs.first() {
            if rest.trim() != format!("<<{}", doc.name) && rest.trim() != format!("<<-{}", doc.name)
            {
                bail!(
                    "RUN with a heredoc: only `RUN <<EOF` (the heredoc is the script) is supported"
                );
            }
            let mut argv = cfgops::shell(&image.cfg);
            argv.push(doc.content.clone());
            argv
        } else {
            match parse::command_form(rest) {
                CommandForm::Exec(v) if v.is_empty() => bail!("RUN needs a command"),
                CommandForm::Shell(s) if s.trim().is_empty() => bail!("RUN needs a command"),
                form => cfgops::argv(&image.cfg, &form),
            }
        };
        // The stage's ARGs reach the command's environment (not the image's), as Docker
        // shows them in `created_by`: `|N K=V ... cmd`.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let args: BTreeMap<&String, &String> = vars.args().iter().collect();
        for (k, v) in &args {
            env.insert((*k).clone(), (*v).clone());
        }
        for kv in image.cfg.env.iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let shown_args: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let created_by = if shown_args.is_empty() {
            argv.join(" ")
        } else {
            format!(
                "|{} {} {}",
                shown_args.len(),
                shown_args.join(" "),
                argv.join(" ")
            )
        };
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = step_key(
            &image.key,
            &format!(
                "{created_by}\n{}\n{}\n{network:?}",
                env.join("\n"),
                cfg_digest(&image.cfg)
            ),
        );
        if self.cached(image, &key)? {
            return Ok(());
        }
        let image_arch = image.object.get("architecture").and_then(Value::as_str);
        if image_arch.is_some_and(|a| a != host_arch()) {
            bail!(
                "RUN in an image for {} on a {} machine: rfs build does not emulate other \
                 architectures",
                image_arch.unwrap_or_default(),
                host_arch()
            );
        }
        let dir = self.step_dir()?;
        let layers = self.layer_inputs(image)?;
        // The mountpoints of the image's volumes exist before the command runs, as Docker
        // makes them; what the command does under them is dropped after it.
        let volumes: Vec<String> = image
            .cfg
            .volumes
            .iter()
            .flat_map(|v| v.keys().cloned())
            .collect();
        let upper = dir.0.join("upper");
        if !volumes.is_empty() {
            std::fs::create_dir_all(&upper)
                .with_context(|| format!("creating {}", upper.display()))?;
            volume::prepare(&upper, &volumes, &self.lower(image)?, self.as_root)
                .context("making the volumes' directories")?;
        }
        let quiet = self.args.quiet.then(silence_stdout).transpose()?;
        std::io::stdout().flush().ok();
        let result = super::run::run_build_step(super::run::BuildRun {
            layers: layers.clone(),
            argv,
            env,
            cwd: PathBuf::from(
                image
                    .cfg
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into()),
            ),
            user: image.cfg.user.clone().unwrap_or_default(),
            network,
            dir: &dir.0,
        });
        drop(quiet);
        let result = result?;
        if let Some(sig) = result.interrupted {
            bail!("interrupted by {sig}");
        }
        if result.code != 0 {
            bail!(
                "the command `{}` exited with status {}",
                inst.args.trim(),
                result.code
            );
        }
        let mut all = layers;
        all.extend(result.init_layer);
        let below = LowerTree::build(all).context("merging the layers so far")?;
        if !volumes.is_empty() {
            volume::discard(&upper, &volumes, &below, self.as_root)
                .context("dropping the command's changes under the image's volumes")?;
        }
        self.layer_step(image, &below, &upper, None, created_by, key)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        inst: &Instruction,
        image: &mut Image,
        vars: &StageVars,
        all: &[Stage],
        index: usize,
        built: &HashMap<usize, Image>,
        globals: &Globals,
    ) -> Result<()> {
        let esc = self.escape;
        let word = inst.keyword.as_str();
        let mut rest = inst.args.trim_start();
        let (mut from, mut chown, mut chmod) = (None, None, None);
        while let Some(flag) = rest.strip_prefix("--") {
            let (f, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
            let (name, value) = f.split_once('=').unwrap_or((f, ""));
            let value = self.expand(value, vars)?;
            match name {
                "from" => from = Some(value),
                "chown" => chown = Some(value),
                "chmod" => chmod = Some(value),
                "link" => {}
                _ => bail!("{word} --{name}: unknown flag"),
            }
            rest = after.trim_start();
        }
        let raw = match parse::command_form(rest) {
            CommandForm::Exec(list) => list,
            CommandForm::Shell(_) => words(rest, esc),
        };
        let mut items = raw
            .iter()
            .map(|w| self.expand(w, vars))
            .collect::<Result<Vec<_>>>()?;
        if items.len() < 2 {
            bail!("{word} requires at least two arguments: {word} <src>... <dest>");
        }
        let dest = items.pop().unwrap_or_default();
        let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        if word == "ADD" && items.iter().any(|s| is_git_url(s)) {
            bail!("ADD of a git repository is not supported by rfs build");
        }
        if word == "ADD" && items.iter().any(|s| is_url(s)) && from.is_some() {
            bail!("ADD --from cannot take a URL");
        }
        let below = self.lower(image)?;
        let workdir = image
            .cfg
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let owner = match &chown {
            Some(spec) => copy::parse_chown(spec, &below)?,
            None => (0, 0),
        };
        let mode = chmod.as_deref().map(copy::parse_chmod).transpose()?;
        // `--from`: an earlier stage, or an image (store or file).
        let from_tree = match &from {
            None => None,
            Some(name) => {
                let lower = name.to_ascii_lowercase();
                let j = all[..index]
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .or_else(|| name.parse::<usize>().ok().filter(|&j| j < index));
                let src = match j {
                    Some(j) => built
                        .get(&j)
                        .cloned()
                        .ok_or_else(|| anyhow!("--from={name}: stage not built"))?,
                    None => {
                        let fake = Stage {
                            line: inst.line,
                            base: name.clone(),
                            name: None,
                            platform: None,
                            body: Vec::new(),
                        };
                        self.base(&fake, all, index, globals, built, "COPY --from")?
                    }
                };
                Some(self.lower(&src)?)
            }
        };
        // `ADD URL /dst`: each URL is downloaded into a context of its own (and never
        // extracted), as a file named after the URL's last path component, mode 0600 and the
        // Last-Modified time, as Docker makes it.
        let url_dir = if word == "ADD" && items.iter().any(|s| is_url(s)) {
            if !items.iter().all(|s| is_url(s)) {
                bail!("ADD: URLs and context files cannot be mixed in one instruction");
            }
            let dir = self.step_dir()?;
            for s in items.iter_mut() {
                *s = download(s, &dir.0)?;
            }
            Some(dir)
        } else {
            None
        };
        // `COPY <<EOF /dst`: each heredoc is a file of a context of its own.
        let heredoc_dir = if url_dir.is_some() {
            url_dir
        } else if inst.heredocs.is_empty() {
            None
        } else {
            let dir = self.step_dir()?;
            for s in items.iter_mut() {
                let name = s
                    .trim_start_matches("<<")
                    .trim_start_matches('-')
                    .trim_matches(['"', '\''])
                    .to_string();
                let Some(doc) = inst.heredocs.iter().find(|d| d.name == name) else {
                    bail!("{word}: with a heredoc, every source must be a heredoc ({s} is not)");
                };
                std::fs::write(dir.0.join(&name), &doc.content)
                    .with_context(|| format!("writing heredoc {name}"))?;
                *s = name;
            }
            Some(dir)
        };
        let plan = match (&from_tree, &heredoc_dir) {
            (Some(tree), _) => Plan::from_tree(tree, &items, &dest, &workdir, &below)?,
            (None, Some(dir)) => {
                let ctx = copy::Context::new(&dir.0, Ignore::default());
                Plan::from_context(&ctx, &items, &dest, &workdir, &below, false)?
            }
            (None, None) => {
                let ctx = copy::Context::new(&self.context, self.ignore.clone());
                Plan::from_context(&ctx, &items, &dest, &workdir, &below, word == "ADD")?
            }
        };
        let digest = plan.digest(from_tree.as_ref())?;
        // As buildah writes it: no flags. (Docker's legacy builder leaves out `--from` too but
        // writes `--chown=U:G` glued to the digest: `COPY --chown=1:1file:...`.)
        let created_by = format!(
            "/bin/sh -c #(nop) {word} {}:{digest} in {dest} ",
            plan.kind_word
        );
        // The flags change what lands in the layer, so the cache key has them.
        let flags = format!("--chown={chown:?} --chmod={chmod:?} --from={from:?}");
        let key = step_key(&image.key, &format!("{created_by}\n{flags}"));
        if self.cached(image, &key)? {
            return Ok(());
        }
        let dir = self.step_dir()?;
        let upper = dir.0.join("upper");
        std::fs::create_dir_all(&upper)?;
        plan.write(
            &upper,
            &below,
            from_tree.as_ref(),
            owner,
            mode,
            self.as_root,
        )?;
        self.layer_step(image, &below, &upper, None, created_by, key)
    }
}

/// Whether an `ADD` source names a git repository, as Docker's builder decides it
/// (`urlutil.IsGitURL`): `git://`, `git@`, `github.com/`, or an http(s) URL whose path ends in
/// `.git` (before a `#ref` fragment).
fn is_git_url(source: &str) -> bool {
    if ["git://", "git@", "github.com/"]
        .iter()
        .any(|p| source.starts_with(p))
    {
        return true;
    }
    (source.starts_with("http://") || source.starts_with("https://"))
        && source.split('#').next().unwrap_or(source).ends_with(".git")
}

/// Downloads `url` into `dir` for `ADD URL`: named after the last path component of the URL
/// (`index.html`... Docker's fallback is the host name), mode 0600, the Last-Modified time if
/// the server gives one. Returns the file's name in `dir`.
fn download(url: &str, dir: &Path) -> Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let name = after_scheme
        .split_once('/')
        .map(|(_, p)| p.rsplit('/').next().unwrap_or(""))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .unwrap_or("index.html")
        .to_string();
    let response = ureq::get(url)
        .call()
        .map_err(|e| anyhow!("ADD {url}: {e}"))?;
    let modified = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(http_date);
    let target = dir.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .with_context(|| format!("ADD {url}: {}", target.display()))?;
    std::io::copy(&mut response.into_body().into_reader(), &mut file)
        .with_context(|| format!("ADD {url}: downloading"))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
    if let Some(secs) = modified {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        file.set_modified(time)?;
    }
    Ok(name)
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's
/// preferred form).
fn http_date(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let (day, year): (u64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time
        .split(':')
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from 1970-01-01 to the date (civil calendar, proleptic Gregorian).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400) as u64;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe as i64 - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

/// Sends this process's stdout to /dev/null until dropped (`-q`: a step's output too).
struct Silenced(std::os::fd::OwnedFd);

fn silence_stdout() -> Result<Silenced> {
    let saved = nix::unistd::dup(std::io::stdout()).context("saving stdout")?;
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2_stdout(&null).context("silencing stdout")?;
    Ok(Silenced(saved))
}

impl Drop for Silenced {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2_stdout(&self.0);
    }
}

/// Gives every entry under `dir` (not `dir` itself) the mtime and atime `secs`, following
/// no symlink.
fn set_times(dir: &Path, secs: i64) -> Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut children = Vec::new();
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path.clone());
            }
            children.push(path);
        }
        for path in children {
            utimensat(
                nix::fcntl::AT_FDCWD,
                &path,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )
            .with_context(|| format!("setting the time of {}", path.display()))?;
        }
    }
    Ok(())
}

/// SIGINT, SIGTERM or SIGHUP, if one is pending for this process (they are blocked during a
/// build). Read from `/proc/self/status`, which needs no unsafe code.
fn pending_interrupt() -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mut mask = 0u64;
    for line in status.lines() {
        if let Some(hex) = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"))
        {
            mask |= u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
        }
    }
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]
        .into_iter()
        .find(|s| mask & (1 << (*s as i32 - 1)) != 0)
}

/// Removes the step directories of builds whose process is gone.
fn sweep_step_dirs(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `ARG a=1 b c=$x`: each name with its unexpanded default.
fn arg_decls(args: &str, escape: char) -> Vec<(String, Option<String>)> {
    words(args, escape)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (w, None),
        })
        .collect()
}

fn words(args: &str, escape: char) -> Vec<String> {
    parse::split_words(args, escape)
}

/// The next step's cache key.
fn step_key(parent: &str, instruction: &str) -> String {
    sha256_hex(format!("{parent}\n{instruction}").as_bytes())
}

/// A digest of the config a step starts from (a RUN's environment, user and directory are
/// part of what it does).
fn cfg_digest(cfg: &ContainerConfig) -> String {
    sha256_hex(&serde_json::to_vec(cfg).unwrap_or_default())
}

/// `["a" "b"]`, as Docker's `created_by` prints a command.
fn go_list(argv: &[String]) -> String {
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// `HEALTHCHECK [--interval=D] [--timeout=D] [--start-period=D] [--retries=N] CMD ...` or
/// `HEALTHCHECK NONE`.
fn healthcheck(args: &str) -> Result<Healthcheck> {
    let mut hc = Healthcheck::default();
    let mut rest = args.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let (f, after) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let (name, value) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("HEALTHCHECK --{f}: expected --{f}=VALUE"))?;
        match name {
            "interval" => hc.interval = Some(duration_ns(value)?),
            "timeout" => hc.timeout = Some(duration_ns(value)?),
            "start-period" => hc.start_period = Some(duration_ns(value)?),
            "start-interval" => hc.start_interval = Some(duration_ns(value)?),
            "retries" => {
                hc.retries = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("HEALTHCHECK --retries={value}: not a number"))?,
                )
            }
            _ => bail!("HEALTHCHECK --{name}: unknown flag"),
        }
        rest = after.trim_start();
    }
    let (word, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    match word.to_ascii_uppercase().as_str() {
        "NONE" => hc.test = Some(vec!["NONE".into()]),
        "CMD" => {
            hc.test = Some(match parse::command_form(cmd) {
                CommandForm::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
                CommandForm::Shell(s) => vec!["CMD-SHELL".into(), s.trim().to_string()],
            })
        }
        _ => bail!("HEALTHCHECK: expected CMD or NONE"),
    }
    Ok(hc)
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(text: &str) -> Result<i64> {
    let bad = || anyhow!("{text}: not a duration (e.g. 30s, 1m30s)");
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let scale = match unit.as_str() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * scale;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Sat, 05 Dec 2026 07:00:00 GMT"),
            Some(1_796_454_000)
        );
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn durations_and_healthchecks() {
        assert_eq!(duration_ns("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(duration_ns("500ms").unwrap(), 500_000_000);
        assert!(duration_ns("5").is_err());
        let hc = healthcheck("--interval=5s --retries=3 CMD curl -f http://x/").unwrap();
        assert_eq!(hc.interval, Some(5_000_000_000));
        assert_eq!(hc.retries, Some(3));
        assert_eq!(
            hc.test.unwrap(),
            vec!["CMD-SHELL".to_string(), "curl -f http://x/".to_string()]
        );
    }

    #[test]
    fn git_urls_as_docker_tells_them() {
        for yes in [
            "https://github.com/moby/moby.git",
            "https://example.com/r.git#main:dir",
            "git@github.com:moby/moby",
            "git://example.com/r",
            "github.com/moby/moby",
        ] {
            assert!(is_git_url(yes), "{yes}");
        }
        for no in ["https://example.com/file.tar.gz", "a.git.txt", "src/"] {
            assert!(!is_git_url(no), "{no}");
        }
    }

    #[test]
    fn go_lists_and_arg_declarations() {
        assert_eq!(go_list(&["sh".into(), "-c".into()]), r#"["sh" "-c"]"#);
        assert_eq!(
            arg_decls("A=1 B", '\\'),
            vec![("A".into(), Some("1".into())), ("B".into(), None)]
        );
    }
}

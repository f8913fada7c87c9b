//! `rfs inspect IMAGE|CONTAINER...`: a JSON array with one object per argument, with Docker's
//! field names and order (`docker image inspect`, `docker container inspect`).
//!
//! For an image, `GraphDriver.Data.LowerDir` lists its layer blobs top to bottom (rfs serves
//! them in place, so they are the real lower layers); for a container, its upper, work dir and
//! mountpoint are there too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use rfs_fs::image::model::{ContainerConfig, Empty, Healthcheck};
use rfs_fs::store::{Store, StoredImage, Timestamp};

use crate::cli::{InspectArgs, InspectType};

/// Docker's zero time, for dates rfs does not know.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Runs `rfs inspect`; fails (after printing what it found) if an argument names nothing.
pub(crate) fn run(root: Option<PathBuf>, args: &InspectArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for target in &args.targets {
        if args.kind != Some(InspectType::Image) {
            if let Some(c) = super::Container::find(store.root(), target)? {
                out.push(container_json(&store, &c)?);
                continue;
            }
        }
        if args.kind != Some(InspectType::Container) {
            match store.find(target) {
                Ok(image) => {
                    out.push(image_json(&store, &image)?);
                    continue;
                }
                Err(rfs_fs::store::Error::NoSuchImage { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        missing.push(target.clone());
    }
    super::format::emit(&format!("{}\n", pretty(&out)?))?;
    if !missing.is_empty() {
        bail!("no such image or container: {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// One inspected object; serialised as the inner struct, so fields keep Docker's order.
#[derive(Serialize)]
#[serde(untagged)]
enum Inspected {
    Image(Box<ImageInspect>),
    Container(Box<ContainerInspect>),
}

/// JSON indented by four spaces, as Docker prints it.
fn pretty(value: &impl Serialize) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// `container.Config` in Docker's field order, with Docker's defaults for what an image
/// config lacks.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    hostname: String,
    domainname: String,
    user: String,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, Empty>>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_escaped: Option<bool>,
    image: String,
    volumes: Option<BTreeMap<String, Empty>>,
    working_dir: String,
    entrypoint: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Vec<String>>,
}

impl DockerConfig {
    fn from(section: Option<&ContainerConfig>) -> DockerConfig {
        let c = section.cloned().unwrap_or_default();
        DockerConfig {
            hostname: c.hostname.unwrap_or_default(),
            domainname: c.domainname.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            attach_stdin: c.attach_stdin.unwrap_or_default(),
            attach_stdout: c.attach_stdout.unwrap_or_default(),
            attach_stderr: c.attach_stderr.unwrap_or_default(),
            exposed_ports: c.exposed_ports,
            tty: c.tty.unwrap_or_default(),
            open_stdin: c.open_stdin.unwrap_or_default(),
            stdin_once: c.stdin_once.unwrap_or_default(),
            env: c.env,
            cmd: c.cmd,
            healthcheck: c.healthcheck,
            args_escaped: c.args_escaped,
            image: c.image.unwrap_or_default(),
            volumes: c.volumes,
            working_dir: c.working_dir.unwrap_or_default(),
            entrypoint: c.entrypoint,
            on_build: c.on_build,
            labels: c.labels,
            stop_signal: c.stop_signal,
            stop_timeout: c.stop_timeout,
            shell: c.shell,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    data: BTreeMap<&'static str, String>,
    name: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: &'static str,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: String,
}

/// `docker image inspect`'s object.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageInspect {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    container: String,
    container_config: DockerConfig,
    docker_version: String,
    author: String,
    config: DockerConfig,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    size: u64,
    virtual_size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
}

/// The layer blobs of `image`, top to bottom, `:`-separated.
fn lower_dirs(store: &Store, image: &StoredImage) -> String {
    image
        .diff_ids
        .iter()
        .rev()
        .map(|d| store.blob_path(d).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn image_json(store: &Store, image: &StoredImage) -> Result<Inspected> {
    let c = &image.config;
    let inspect = ImageInspect {
        id: image.id.to_string(),
        repo_tags: image.tags.iter().map(ToString::to_string).collect(),
        // Docker's `repository@digest` of what each pull's reference resolved to.
        repo_digests: image
            .meta
            .pulled
            .iter()
            .map(|p| format!("{}@{}", p.repository, p.repo_digest))
            .collect(),
        parent: image.meta.parent.map(|p| p.to_string()).unwrap_or_default(),
        // Docker falls back on the newest history entry's comment (docker commit -m).
        comment: c
            .comment
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| c.history.last().and_then(|last| last.comment.clone()))
            .unwrap_or_default(),
        created: c
            .created
            .as_deref()
            .and_then(Timestamp::parse)
            .map_or_else(|| ZERO_TIME.to_owned(), Timestamp::to_rfc3339_nano),
        container: c.container.clone().unwrap_or_default(),
        container_config: DockerConfig::from(c.container_config.as_ref()),
        docker_version: c.docker_version.clone().unwrap_or_default(),
        author: c.author.clone().unwrap_or_default(),
        config: DockerConfig::from(c.config.as_ref()),
        architecture: c.architecture.clone().unwrap_or_default(),
        variant: c.variant.clone(),
        os: c.os.clone().unwrap_or_default(),
        size: image.size(),
        virtual_size: image.size(),
        graph_driver: GraphDriver {
            data: BTreeMap::from([
                ("LowerDir", lower_dirs(store, image)),
                ("MergedDir", String::new()),
                ("UpperDir", String::new()),
                ("WorkDir", String::new()),
            ]),
            name: "rfs",
        },
        root_fs: RootFs {
            kind: "layers",
            layers: image.diff_ids.iter().map(ToString::to_string).collect(),
        },
        metadata: Metadata {
            last_tag_time: image
                .meta
                .last_tag_time
                .clone()
                .unwrap_or_else(|| ZERO_TIME.to_owned()),
        },
    };
    Ok(Inspected::Image(Box::new(inspect)))
}

/// `docker container inspect`'s `State`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct State {
    status: &'static str,
    running: bool,
    paused: bool,
    restarting: bool,
    #[serde(rename = "OOMKilled")]
    oom_killed: bool,
    dead: bool,
    pid: i32,
    exit_code: i32,
    error: String,
    started_at: String,
    finished_at: String,
}

/// `docker container inspect`'s object (the fields rfs has).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerInspect {
    id: String,
    created: String,
    path: String,
    args: Vec<String>,
    state: State,
    image: String,
    resolv_conf_path: String,
    hostname_path: String,
    hosts_path: String,
    log_path: String,
    name: String,
    restart_count: u32,
    driver: &'static str,
    platform: &'static str,
    mount_label: String,
    process_label: String,
    app_armor_profile: String,
    #[serde(rename = "ExecIDs")]
    exec_ids: Value,
    host_config: Value,
    graph_driver: GraphDriver,
    mounts: Vec<Value>,
    config: DockerConfig,
    network_settings: Value,
}

fn time_text(secs: Option<u64>) -> String {
    secs.and_then(|s| i64::try_from(s).ok()).map_or_else(
        || ZERO_TIME.to_owned(),
        |secs| Timestamp { secs, nanos: 0 }.to_rfc3339(),
    )
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

fn container_json(store: &Store, c: &super::Container) -> Result<Inspected> {
    let s = &c.state;
    let image = c.stored_image(store);
    let spec = rfs_runner::RunSpec::read(&c.dir.join("spec.json")).ok();
    let running = s.is_running();
    let status = match s.status {
        rfs_runner::state::Status::Created => "created",
        rfs_runner::state::Status::Running if running => "running",
        _ => "exited",
    };
    let mut config = DockerConfig::from(image.as_ref().and_then(|i| i.config.config.as_ref()));
    config.image = s.image.clone();
    config.cmd = Some(s.command.clone());
    let mut mounts = Vec::new();
    if let Some(spec) = &spec {
        config.hostname = spec.hostname.clone();
        config.env = Some(spec.env.clone());
        config.working_dir = path_text(&spec.cwd);
        config.user = spec.user.clone();
        for b in &spec.binds {
            if b.source.starts_with(&c.dir) {
                continue;
            }
            mounts.push(json!({
                "Type": "bind",
                "Source": path_text(&b.source),
                "Destination": path_text(&b.target),
                "Mode": if b.read_only { "ro" } else { "" },
                "RW": !b.read_only,
                "Propagation": "rprivate",
            }));
        }
    }
    let inspect = ContainerInspect {
        id: s.id.clone(),
        created: time_text(Some(s.created)),
        path: s.command.first().cloned().unwrap_or_default(),
        args: s.command.iter().skip(1).cloned().collect(),
        state: State {
            status,
            running,
            paused: false,
            restarting: false,
            oom_killed: false,
            dead: false,
            pid: if running { s.pid.unwrap_or(0) } else { 0 },
            exit_code: s.exit_code.unwrap_or(0),
            error: String::new(),
            started_at: time_text(Some(s.created)),
            finished_at: time_text(s.finished),
        },
        image: image
            .as_ref()
            .map_or_else(|| s.image.clone(), |i| i.id.to_string()),
        resolv_conf_path: path_text(&c.dir.join("resolv.conf")),
        hostname_path: path_text(&c.dir.join("hostname")),
        hosts_path: path_text(&c.dir.join("hosts")),
        log_path: String::new(),
        name: format!("/{}", s.name),
        restart_count: 0,
        driver: "rfs",
        platform: "linux",
        mount_label: String::new(),
        process_label: String::new(),
        app_armor_profile: String::new(),
        exec_ids: Value::Null,
        host_config: json!({}),
        graph_driver: GraphDriver {
            data: BTreeMap::from([
                (
                    "LowerDir",
                    // The init layer on top, as docker lists its `-init` layer.
                    Some(super::Container::init_layer_path(&c.dir))
                        .filter(|p| p.exists())
                        .map(|p| path_text(&p))
                        .into_iter()
                        .chain(image.as_ref().map(|i| lower_dirs(store, i)))
                        .collect::<Vec<_>>()
                        .join(":"),
                ),
                ("MergedDir", path_text(&c.dir.join("rootfs"))),
                ("UpperDir", path_text(&c.upper())),
                ("WorkDir", path_text(&c.dir.join("work"))),
            ]),
            name: "rfs",
        },
        mounts,
        config,
        network_settings: json!({}),
    };
    Ok(Inspected::Container(Box::new(inspect)))
}

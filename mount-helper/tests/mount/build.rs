//! `rfs build` (issue 16), driven end to end: Dockerfiles built by rfs over the busybox test
//! image, the result mounted with `rfs mount` (and run with `rfs run`), and — the oracle —
//! the same Dockerfiles built by the Docker engine (legacy builder, a private dockerd started
//! and stopped by the test): merged trees (`docker export`), config fields, layer counts and
//! history `empty_layer` flags must agree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{MountGuard, Scratch, images_dir, is_mounted, rfs_bin};
use crate::images::{assert_same_tree, tree_listing};

/// A store of its own with the busybox test image loaded as `rfs/busybox:latest`.
struct Env {
    s: Scratch,
    root: PathBuf,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        let images = images_dir(test)?;
        let s = Scratch::new();
        let root = s.mkdir("root");
        let env = Env { s, root };
        let out = env.rfs(&[
            "load".as_ref(),
            "-i".as_ref(),
            images.join("busybox-docker-archive.tar").as_os_str(),
        ]);
        assert!(out.status.success(), "rfs load: {}", text(&out));
        Some(env)
    }

    fn rfs(&self, args: &[&OsStr]) -> Output {
        Command::new(rfs_bin())
            .env("RFS_ROOT", &self.root)
            .args(args)
            .current_dir("/")
            .output()
            .expect("running rfs")
    }

    fn build(&self, args: &[&str]) -> Output {
        let mut all: Vec<&OsStr> = vec!["build".as_ref()];
        all.extend(args.iter().map(OsStr::new));
        self.rfs(&all)
    }

    /// `rfs build ARGS`, which must succeed; returns (image id, stdout).
    fn build_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.build(args);
        assert!(out.status.success(), "rfs build {args:?}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let id = stdout.lines().last().unwrap_or_default().trim().to_string();
        assert!(id.starts_with("sha256:"), "last line is the id: {stdout}");
        (id, stdout)
    }

    /// A context directory with `files` (path → content).
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.s.mkdir(name);
        for (p, content) in files {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        }
        dir
    }

    /// The image config of a store image, by id.
    fn config(&self, id: &str) -> Value {
        let hex = id.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(self.root.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn mount(&self, image: &str, name: &str) -> (MountGuard, PathBuf) {
        let mnt = self.s.mkdir(name);
        let root = self.root.clone();
        let guard = MountGuard::rfs(
            &[
                "mount".as_ref(),
                "--root".as_ref(),
                root.as_os_str(),
                "--read-only".as_ref(),
                image.as_ref(),
            ],
            &mnt,
        )
        .unwrap_or_else(|e| panic!("rfs mount {image}: {e}"));
        (guard, mnt)
    }

    /// The layer tars (blobs in the store) of a store image, by id, bottom first.
    fn layers(&self, id: &str) -> Vec<PathBuf> {
        self.config(id)["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
                self.root.join("blobs/sha256").join(hex)
            })
            .collect()
    }

    fn images(&self) -> String {
        text(&self.rfs(&["images".as_ref()]))
    }

    /// How many blobs the store holds.
    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Nothing of a build may remain: no step directory, no mount under the root.
    fn assert_nothing_left(&self) {
        let build = self.root.join("build");
        let left: Vec<_> = std::fs::read_dir(&build)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "step directories left: {left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root.display().to_string();
        assert!(
            !mounts.lines().any(|l| l.contains(&root)),
            "a mount under {root} is left"
        );
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private Docker engine for one test: its own data root, exec root and socket, stopped by
/// pid on drop (after removing the images the test built).
struct Docker {
    child: Child,
    sock: PathBuf,
    tags: Vec<String>,
}

impl Docker {
    /// Loads the test images' busybox (`docker save` archive): the base the oracle builds use.
    fn load_busybox(&self, images: &Path) {
        self.run(&[
            "load".as_ref(),
            "-q".as_ref(),
            "-i".as_ref(),
            images.join("busybox-docker-archive.tar").as_os_str(),
        ]);
    }

    fn start(s: &Scratch) -> Docker {
        let dir = s.mkdir("docker");
        let sock = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd (install docker.io; see scripts/install-deps.sh)");
        let mut d = Docker {
            child,
            sock,
            tags: Vec::new(),
        };
        let start = Instant::now();
        loop {
            let ok = d
                .cmd()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "dockerd exited with {st}: {}",
                    std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not answer"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    fn run(&self, args: &[&OsStr]) -> Output {
        let out = self.cmd().args(args).output().expect("docker");
        assert!(out.status.success(), "docker {args:?}: {}", text(&out));
        out
    }

    /// `docker build -t TAG ARGS`; the tag is removed on drop.
    fn build(&mut self, tag: &str, args: &[&str]) {
        self.tags.push(tag.to_string());
        let mut all: Vec<&OsStr> =
            vec!["build".as_ref(), "-q".as_ref(), "-t".as_ref(), tag.as_ref()];
        all.extend(args.iter().map(OsStr::new));
        self.run(&all);
    }

    /// The image config (with history) of TAG, from `docker save`.
    fn config(&self, tag: &str, s: &Scratch) -> Value {
        let tar = s
            .dir
            .path()
            .join(format!("{}.tar", tag.replace([':', '/'], "_")));
        self.run(&[
            "save".as_ref(),
            "-o".as_ref(),
            tar.as_os_str(),
            tag.as_ref(),
        ]);
        let member = |name: &str| -> Vec<u8> {
            let out = Command::new("tar")
                .arg("-xOf")
                .arg(&tar)
                .arg(name)
                .output()
                .unwrap();
            assert!(out.status.success(), "tar -xOf {name}");
            out.stdout
        };
        let manifest: Value = serde_json::from_slice(&member("manifest.json")).unwrap();
        let config = manifest[0]["Config"].as_str().unwrap().to_string();
        serde_json::from_slice(&member(&config)).unwrap()
    }

    /// The layer tars of TAG, bottom first, from `docker save`.
    fn layers(&self, tag: &str, s: &Scratch) -> Vec<PathBuf> {
        let name = tag.replace([':', '/'], "_");
        let saved = s.mkdir(&format!("saved-{name}"));
        let tar = s.dir.path().join(format!("saved-{name}.tar"));
        self.run(&[
            "save".as_ref(),
            "-o".as_ref(),
            tar.as_os_str(),
            tag.as_ref(),
        ]);
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&saved)
            .status()
            .unwrap();
        assert!(st.success());
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
        manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| saved.join(l.as_str().unwrap()))
            .collect()
    }

    /// `docker export` of a container created from TAG, unpacked into `dest`.
    fn export(&self, tag: &str, dest: &Path) {
        let out = self.run(&["create".as_ref(), tag.as_ref(), "/none".as_ref()]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let tar = dest.with_extension("tar");
        self.run(&[
            "export".as_ref(),
            "-o".as_ref(),
            tar.as_os_str(),
            id.as_ref(),
        ]);
        self.run(&["rm".as_ref(), id.as_ref()]);
        std::fs::create_dir_all(dest).unwrap();
        let st = Command::new("tar")
            .arg("-xpf")
            .arg(&tar)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
            .arg("-C")
            .arg(dest)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for t in std::mem::take(&mut self.tags) {
            let _ = self
                .cmd()
                .args(["rmi", "-f", &t])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runtime files `docker export` adds to a container's tree (and the mountpoints it
/// makes), left out of both sides.
fn without_runtime_files(mut tree: BTreeMap<String, String>) -> BTreeMap<String, String> {
    tree.retain(|p, _| {
        !matches!(
            p.as_str(),
            "./.dockerenv"
                | "./etc/hosts"
                | "./etc/hostname"
                | "./etc/resolv.conf"
                | "./etc/mtab"
                | "./proc"
                | "./sys"
                // `docker create` makes the mountpoint of the image's VOLUME in the container.
                | "./data"
        ) && p != "./dev"
            && !p.starts_with("./dev/")
    });
    tree
}

/// The config fields both builders must agree on.
fn config_fields(config: &Value) -> Value {
    let c = &config["config"];
    let field = |k: &str| match &c[k] {
        Value::Null => Value::Null,
        Value::Object(m) if m.is_empty() => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        v => v.clone(),
    };
    serde_json::json!({
        "Env": field("Env"), "Cmd": field("Cmd"), "Entrypoint": field("Entrypoint"),
        "WorkingDir": field("WorkingDir"), "User": field("User"), "Labels": field("Labels"),
        "ExposedPorts": field("ExposedPorts"), "Volumes": field("Volumes"),
        "StopSignal": field("StopSignal"), "Healthcheck": field("Healthcheck"),
        "OnBuild": field("OnBuild"), "Shell": field("Shell"),
        "layers": config["rootfs"]["diff_ids"].as_array().map(|a| a.len()),
        "history": config["history"].as_array().map(|h| h.iter()
            .map(|e| e["empty_layer"].as_bool().unwrap_or(false)).collect::<Vec<_>>()),
    })
}

/// The `created_by` of every `COPY`/`ADD` in the history, with the content digest
/// (`file:<hex>`, `dir:<hex>`, `multi:<hex>`) masked: each builder hashes what it copies its
/// own way, but the words around the digest must read the same. (The other instructions'
/// entries follow Docker's wording, which buildah does not share: buildah keeps the
/// instruction's text as written, `ENV PATH=/x:$PATH`, `VOLUME /data`, where Docker's
/// shows it expanded, `VOLUME [/data]`.)
fn copy_created_by(config: &Value) -> Vec<String> {
    let history = config["history"].as_array().expect("history");
    history
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .filter(|c| c.contains("#(nop) COPY ") || c.contains("#(nop) ADD "))
        .map(|text| {
            let mut out = String::new();
            let mut rest = text;
            while let Some(at) = rest.find(':') {
                let (head, tail) = rest.split_at(at);
                let hex = tail[1..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .count();
                out.push_str(head);
                if hex == 64 && ["file", "dir", "multi"].iter().any(|k| head.ends_with(k)) {
                    out.push_str(":<digest>");
                    rest = &tail[1 + hex..];
                } else {
                    out.push(':');
                    rest = &tail[1..];
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

const SINGLE: &str = r#"FROM rfs/busybox:latest
ARG GREETING=hello
USER root
WORKDIR /etc
WORKDIR /srv/app
# deletes and renames lower files and a lower directory: whiteouts in the layer
RUN echo "$GREETING from run" > /srv/app/run.txt && rm /opt/data/keep \
    && mv /opt/data/remove /opt/data/renamed && rm -rf /opt/opq && mv /opt/data /opt/moved
RUN true
ENV APP_MODE=prod PATH=/srv/app/bin:$PATH
LABEL org.example.name="rfs test" version=1
COPY hello.txt ./
COPY src/ /srv/src/
COPY *.conf /etc/app/
COPY --chown=1000:1000 owned /home/app/owned
COPY link /srv/link
ADD bundle.tar.gz /opt/bundle/
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --retries=3 CMD test -f /srv/app/run.txt
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell $0" > /srv/app/shell.txt
ONBUILD RUN echo triggered > /triggered
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/app/run.txt"]
"#;

const MULTI: &str = r#"ARG BASE=rfs/busybox:latest
FROM ${BASE} AS build
USER root
RUN mkdir -p /out/sub && echo built > /out/artifact && echo other > /out/sub/other \
    && chmod 0600 /out/sub/other && ln -s artifact /out/alias
FROM scratch AS final
COPY --from=build /out/artifact /artifact
COPY --from=build /out/ /copied/
FROM rfs/busybox:latest
COPY --from=final /artifact /from-final
"#;

/// A context exercising COPY: files, a directory with a private subdirectory, a symlink and
/// hard links inside, globs, a top-level symlink (followed), `.dockerignore` with an exception.
fn oracle_context(env: &Env) -> PathBuf {
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", SINGLE),
            ("Dockerfile.multi", MULTI),
            ("hello.txt", "hello from the context\n"),
            ("a.conf", "a=1\n"),
            ("b.conf", "b=2\n"),
            ("c.txt", "not a conf\n"),
            ("owned", "owned by app\n"),
            ("src/main.sh", "#!/bin/sh\necho main\n"),
            ("src/private/secret", "s\n"),
            ("src/build.log", "ignored\n"),
            ("src/important.log", "kept by the exception\n"),
            (".dockerignore", "src/*.log\n!src/important.log\n"),
        ],
    );
    std::fs::set_permissions(
        ctx.join("src/main.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        ctx.join("src/private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::symlink("main.sh", ctx.join("src/run")).unwrap();
    std::fs::hard_link(ctx.join("src/main.sh"), ctx.join("src/main-link.sh")).unwrap();
    std::os::unix::fs::symlink("hello.txt", ctx.join("link")).unwrap();
    // A gzipped tar with its own owners, a directory, a symlink and a hard link: ADD extracts it.
    let src = env.context(
        "bundle-src",
        &[
            ("bin/tool", "#!/bin/sh\necho tool\n"),
            ("share/doc", "doc\n"),
        ],
    );
    std::os::unix::fs::symlink("bin/tool", src.join("tool-link")).unwrap();
    std::fs::hard_link(src.join("share/doc"), src.join("share/doc2")).unwrap();
    let st = Command::new("tar")
        .args(["--owner=1234", "--group=5678", "-czf"])
        .arg(ctx.join("bundle.tar.gz"))
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    ctx
}

#[test]
fn build_matches_the_docker_engine() {
    let Some(env) = Env::new("build_matches_the_docker_engine") else {
        return;
    };
    let images = images_dir("build_matches_the_docker_engine").unwrap();
    let ctx = oracle_context(&env);
    let ctx_s = ctx.to_str().unwrap();
    let mut docker = Docker::start(&env.s);
    docker.load_busybox(&images);
    let suffix = std::process::id();
    let multi = ctx.join("Dockerfile.multi");
    let multi = multi.to_str().unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "single",
            vec![
                "--build-arg",
                "GREETING=hi",
                "--label",
                "org.example.extra=yes",
                ctx_s,
            ],
        ),
        ("multi", vec!["-f", multi, ctx_s]),
        ("final", vec!["-f", multi, "--target", "final", ctx_s]),
    ];
    for (name, args) in &cases {
        let tag = format!("rfs-build-test-{name}-{suffix}:latest");
        docker.build(&tag, args);
        let mut rargs: Vec<&str> = vec!["-t", &tag];
        rargs.extend(args.iter().copied());
        let (id, out) = env.build_ok(&rargs);
        assert!(out.contains("STEP 1/"), "{name}: {out}");

        let docker_cfg = docker.config(&tag, &env.s);
        let want_cfg = config_fields(&docker_cfg);
        let got_cfg = config_fields(&env.config(&id));
        assert_eq!(
            got_cfg, want_cfg,
            "{name}: config, layers and history differ"
        );
        // The COPY/ADD entries read as buildah writes them (`build_matches_buildah_bud`
        // compares them): no flags. Docker's legacy builder agrees (it leaves `--from` out
        // too) but for one thing: it glues `--chown=U:G` to the digest
        // (`COPY --chown=1000:1000file:<hex> in ...`), which buildah leaves out.
        let docker_created_by: Vec<String> = copy_created_by(&docker_cfg)
            .into_iter()
            .map(
                |c| match (c.find(" COPY --chown="), c.find("file:<digest>")) {
                    (Some(at), Some(end)) => format!("{} COPY {}", &c[..at], &c[end..]),
                    _ => c,
                },
            )
            .collect();
        assert_eq!(
            copy_created_by(&env.config(&id)),
            docker_created_by,
            "{name}: created_by"
        );

        let export = env.s.dir.path().join(format!("export-{name}"));
        docker.export(&tag, &export);
        let (guard, mnt) = env.mount(&tag, &format!("mnt-{name}"));
        let got = without_runtime_files(tree_listing(&mnt));
        let mut want = without_runtime_files(tree_listing(&export));
        // A container of an image without /etc gets one for its runtime files.
        if !got.contains_key("./etc") && !want.keys().any(|k| k.starts_with("./etc/")) {
            want.remove("./etc");
        }
        assert_same_tree(name, &got, &want);
        if *name == "single" {
            // Hard links in the context stay hard links; the ignored file is not there.
            let a = std::fs::metadata(mnt.join("srv/src/main.sh")).unwrap();
            let b = std::fs::metadata(mnt.join("srv/src/main-link.sh")).unwrap();
            assert_eq!(a.ino(), b.ino(), "hard link kept");
            assert!(!mnt.join("srv/src/build.log").exists());
            assert!(!mnt.join("opt/data").exists() && mnt.join("opt/moved/renamed").exists());
            // The renamed directory keeps security.capability and its hard links: the RUN's
            // rename is a rename (a redirect in the upper, a full copy in the layer). Docker's
            // overlay2 has no redirect_dir, so busybox mv falls back to a copy there, which
            // drops the capability; the image's own value is the oracle.
            let out = Command::new("getfattr")
                .args(["-n", "security.capability", "-e", "hex", "--absolute-names"])
                .arg(mnt.join("opt/moved/capbin"))
                .output()
                .unwrap();
            let got_cap = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("security.capability="))
                .map(str::to_string);
            let expected =
                std::fs::read_to_string(images.join("busybox-expected-xattrs.txt")).unwrap();
            let want_cap = expected
                .split("# file: ")
                .find(|block| block.starts_with("opt/data/capbin"))
                .and_then(|block| {
                    block
                        .lines()
                        .find(|l| l.starts_with("security.capability="))
                        .map(str::to_string)
                });
            assert!(want_cap.is_some(), "the image's capbin has a capability");
            assert_eq!(got_cap, want_cap, "security.capability");
            let a = std::fs::metadata(mnt.join("opt/moved/hl1")).unwrap();
            let b = std::fs::metadata(mnt.join("opt/moved/hl2")).unwrap();
            assert_eq!(a.ino(), b.ino(), "hard links across the rename");
        }
        guard.unmount().unwrap();
    }
    env.assert_nothing_left();
}

/// The layer of a RUN that deletes and renames lower files holds whiteouts for them.
#[test]
fn build_run_deleting_lower_files_writes_whiteouts() {
    let Some(env) = Env::new("build_run_deleting_lower_files_writes_whiteouts") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\n\
             RUN rm /opt/data/keep && mv /opt/data/remove /opt/data/renamed && rm -rf /opt/opq\n",
        )],
    );
    let (id, _) = env.build_ok(&[ctx.to_str().unwrap()]);
    let config = env.config(&id);
    let top = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    let blob = env
        .root
        .join("blobs/sha256")
        .join(top.as_str().unwrap().strip_prefix("sha256:").unwrap());
    let out = Command::new("tar").arg("-tf").arg(&blob).output().unwrap();
    let members = String::from_utf8_lossy(&out.stdout);
    for want in [
        "opt/data/.wh.keep",
        "opt/data/.wh.remove",
        "opt/data/renamed",
        "opt/.wh.opq",
    ] {
        assert!(
            members.lines().any(|l| l.trim_end_matches('/') == want),
            "{want} missing from the layer:\n{members}"
        );
    }
}

#[test]
fn build_copy_flags_ignore_and_build_args() {
    let Some(env) = Env::new("build_copy_flags_ignore_and_build_args") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/busybox:latest\n\
                 ARG DEST=/default\n\
                 COPY --chown=app --chmod=0640 f.txt $DEST/f.txt\n\
                 COPY --chmod=755 d/ /tree/\n\
                 COPY x?.txt /globbed/\n\
                 COPY cap.bin /cap.bin\n\
                 COPY --from=rfs/busybox:latest /opt/data/capbin /from-image/capbin\n",
            ),
            ("f.txt", "f\n"),
            ("d/a", "a\n"),
            ("d/skip.tmp", "ignored\n"),
            ("x1.txt", "1\n"),
            ("x2.txt", "2\n"),
            ("x10.txt", "10\n"),
            ("cap.bin", "#!/bin/sh\n"),
            (".dockerignore", "**/*.tmp\n"),
        ],
    );
    // xattrs of the context (a user one, a file capability) are not copied, as the Docker
    // engine does not copy them (`build_copy_keeps_the_xattrs_the_docker_engine_keeps`).
    let cap = "0x0100000200040000000000000000000000000000";
    for (name, value) in [("user.test", "hello"), ("security.capability", cap)] {
        let st = Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(ctx.join("cap.bin"))
            .status()
            .unwrap();
        assert!(st.success(), "setfattr {name}");
    }
    std::os::unix::fs::symlink("a", ctx.join("d/to-a")).unwrap();
    let (id, _) = env.build_ok(&[
        "--build-arg",
        "DEST=/given",
        "-t",
        "flags",
        ctx.to_str().unwrap(),
    ]);
    let (guard, mnt) = env.mount(&id, "mnt");
    let f = std::fs::metadata(mnt.join("given/f.txt")).unwrap();
    // `app` is 1000:1000 in the busybox image's /etc/passwd.
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1000, 0o640));
    assert_eq!(
        std::fs::metadata(mnt.join("tree/a")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(mnt.join("tree/to-a")).unwrap(),
        Path::new("a")
    );
    assert!(!mnt.join("tree/skip.tmp").exists(), ".dockerignore applies");
    assert!(
        !mnt.join("default").exists(),
        "--build-arg wins over the default"
    );
    let mut globbed: Vec<_> = std::fs::read_dir(mnt.join("globbed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    globbed.sort();
    assert_eq!(globbed, vec!["x1.txt", "x2.txt"]);
    let xattr = |file: &str, name: &str| {
        let out = Command::new("getfattr")
            .args(["-n", name, "-e", "hex", "--absolute-names"])
            .arg(mnt.join(file))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    assert_eq!(xattr("cap.bin", "user.test"), None);
    assert_eq!(xattr("cap.bin", "security.capability"), None);
    // Nor does COPY --from of an image copy the capability its file has there.
    assert_eq!(xattr("from-image/capbin", "security.capability"), None);
    guard.unmount().unwrap();
}

/// The xattrs of each entry of a layer tar (its PAX `SCHILY.xattr.*` records), by path
/// (without a leading `./` or a trailing `/`).
fn layer_xattrs(layer: &Path) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(layer).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        out.insert(path, xattrs);
    }
    out
}

/// What a `COPY`/`ADD` keeps of a source's xattrs, against the Docker engine's layers (`docker
/// save`): the context file has `user.foo` and a file capability, a context directory's file
/// has `user.inner`, and the busybox image's `capbin` and `keep` (copied with `--from`) have a
/// capability and `user.rfs.test`. The engine keeps none of them: its builder chowns every
/// copied file, which drops the capability, and its copy carries no other xattr. (buildah
/// 1.28 keeps `user.*` and `security.capability`; rfs follows the Docker engine.)
#[test]
fn build_copy_keeps_the_xattrs_the_docker_engine_keeps() {
    let Some(env) = Env::new("build_copy_keeps_the_xattrs_the_docker_engine_keeps") else {
        return;
    };
    let images = images_dir("build_copy_keeps_the_xattrs_the_docker_engine_keeps").unwrap();
    let dockerfile = "FROM rfs/busybox:latest\n\
                      COPY capfile plain /x/\n\
                      COPY xd /xd/\n\
                      ADD capfile /added\n\
                      COPY --from=rfs/busybox:latest /opt/data/capbin /opt/data/keep /from/\n";
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("capfile", "#!/bin/sh\n"),
            ("plain", "plain\n"),
            ("xd/f", "in\n"),
        ],
    );
    let cap = "0x0100000200200000000000000000000000000000";
    for (file, name, value) in [
        ("capfile", "user.foo", "bar"),
        ("capfile", "security.capability", cap),
        ("xd/f", "user.inner", "i"),
    ] {
        let st = Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(ctx.join(file))
            .status()
            .unwrap();
        assert!(st.success(), "setfattr {name} {file}");
    }
    let ctx_s = ctx.to_str().unwrap();
    let mut docker = Docker::start(&env.s);
    docker.load_busybox(&images);
    let tag = format!("rfs-build-xattrs-{}:latest", std::process::id());
    docker.build(&tag, &[ctx_s]);
    let docker_layers = docker.layers(&tag, &env.s);
    let (id, _) = env.build_ok(&["-t", "xattrs", ctx_s]);
    let rfs_layers = env.layers(&id);
    assert_eq!(rfs_layers.len(), docker_layers.len(), "layer count");
    let copied = 4;
    let start = rfs_layers.len() - copied;
    for (i, (got, want)) in rfs_layers[start..]
        .iter()
        .zip(&docker_layers[start..])
        .enumerate()
    {
        let (got, want) = (layer_xattrs(got), layer_xattrs(want));
        assert!(
            want.contains_key("x/capfile")
                || want.contains_key("xd/f")
                || want.contains_key("added")
                || want.contains_key("from/capbin"),
            "layer {i} of the engine holds a copied file: {want:?}"
        );
        assert_eq!(got, want, "the xattrs of COPY layer {i}");
    }
}

/// A base image that declares a volume over an image directory.
const VOLUME_BASE: &str = "FROM rfs/busybox:latest\nUSER root\nVOLUME /opt/data\n";

/// RUNs that write, delete (whiteouts), replace (an opaque directory) and chmod under volumes,
/// inherited and declared here, one of them a directory the image lacks, plus COPYs into them.
const VOLUME_STEPS: &str = r#"ARG BASE
FROM ${BASE}
RUN echo x > /opt/data/new && rm /opt/data/keep && rm -rf /opt/data/dir && mkdir /opt/data/dir \
    && echo y > /opt/data/dir/y && chmod 700 /opt/data && echo y > /outside
VOLUME /vol /vol2/deep
RUN echo x > /vol/a && mkdir -p /vol/sub/sub2 && echo y > /vol/sub/f \
    && mkdir -p /vol2/deep/x && echo ok > /vol2/sibling
COPY a.txt /vol/copied
COPY a.txt /opt/data/copied
RUN echo z > /vol/after-copy && rm /vol/copied && chmod 700 /vol && rm /opt/data/copied
RUN test -f /vol/copied && test -f /opt/data/copied && test ! -e /vol/a && test -f /opt/data/keep
"#;

/// A RUN's changes under a VOLUME (the base's or the build's own) are dropped, COPYs into it
/// are kept, and a volume directory the image lacks is made as Docker's engine makes its
/// mountpoint: tree, config, layers and history flags, and the paths in each layer, as the
/// engine builds them.
#[test]
fn build_run_under_a_volume_matches_the_docker_engine() {
    let Some(env) = Env::new("build_run_under_a_volume_matches_the_docker_engine") else {
        return;
    };
    let images = images_dir("build_run_under_a_volume_matches_the_docker_engine").unwrap();
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", VOLUME_STEPS),
            ("Dockerfile.base", VOLUME_BASE),
            ("a.txt", "hi\n"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    let base_file = ctx.join("Dockerfile.base");
    let base_file = base_file.to_str().unwrap();
    let mut docker = Docker::start(&env.s);
    docker.load_busybox(&images);
    let suffix = std::process::id();
    let base = format!("rfs-volume-base-{suffix}:latest");
    let tag = format!("rfs-volume-{suffix}:latest");
    let base_arg = format!("BASE={base}");
    docker.build(&base, &["-f", base_file, ctx_s]);
    docker.build(&tag, &["--build-arg", &base_arg, ctx_s]);
    env.build_ok(&["-t", &base, "-f", base_file, ctx_s]);
    let (id, _) = env.build_ok(&["-t", &tag, "--build-arg", &base_arg, ctx_s]);

    assert_eq!(
        config_fields(&env.config(&id)),
        config_fields(&docker.config(&tag, &env.s)),
        "config, layers and history"
    );
    let paths = |layer: &Path| layer_xattrs(layer).into_keys().collect::<Vec<_>>();
    let got: Vec<_> = env.layers(&id).iter().map(|l| paths(l)).collect();
    let want: Vec<_> = docker
        .layers(&tag, &env.s)
        .iter()
        .map(|l| paths(l))
        .collect();
    assert_eq!(got.len(), want.len(), "layer count");
    let added = 4;
    for (i, (g, w)) in got[got.len() - added..]
        .iter()
        .zip(&want[want.len() - added..])
        .enumerate()
    {
        assert_eq!(g, w, "the paths of the build's layer {i}");
    }
    // The engine's own answer, so the comparison cannot pass on two empty lists: the first
    // RUN keeps only what it wrote outside the volume.
    assert_eq!(want[want.len() - added], vec!["outside".to_string()]);

    let export = env.s.dir.path().join("export");
    docker.export(&tag, &export);
    let (guard, mnt) = env.mount(&tag, "mnt");
    let got = without_runtime_files(tree_listing(&mnt));
    let want = without_runtime_files(tree_listing(&export));
    assert_same_tree("volume", &got, &want);
    guard.unmount().unwrap();
    env.assert_nothing_left();
}

/// A RUN that turns a volume's parent into a symlink to a host directory: dropping the
/// RUN's changes under the volume never follows that link on the host side (it would delete
/// the host directory's files). Docker's RUN cannot do this (the volume is mounted there:
/// `rm` fails with EBUSY); rfs fails the step, naming it.
#[test]
fn build_volume_discard_never_follows_a_symlink_the_run_made() {
    let Some(env) = Env::new("build_volume_discard_never_follows_a_symlink_the_run_made") else {
        return;
    };
    let victim = env.s.mkdir("victim");
    std::fs::create_dir(victim.join("vol")).unwrap();
    std::fs::write(victim.join("vol/keep"), "a host file\n").unwrap();
    let dockerfile = format!(
        "FROM rfs/busybox:latest\nUSER root\nVOLUME /srv/vol\n\
         RUN rm -rf /srv && ln -s {} /srv\n",
        victim.display()
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)]);
    let out = env.build(&["-t", "volume-link:1", ctx.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(victim.join("vol/keep"))
            .ok()
            .as_deref(),
        Some("a host file\n"),
        "the host directory behind the RUN's symlink was touched"
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile line 4") && err.contains("/srv"),
        "{err}"
    );
    env.assert_nothing_left();
}

#[test]
fn build_target_builds_only_the_stages_it_needs() {
    let Some(env) = Env::new("build_target_builds_only_the_stages_it_needs") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest AS base\nUSER root\nRUN echo base > /base.txt\n\
             FROM base AS broken\nRUN exit 7\n\
             FROM base AS app\nCOPY --from=base /base.txt /copied.txt\nRUN cat /copied.txt\n",
        )],
    );
    let ctx_s = ctx.to_str().unwrap();
    let (_, out) = env.build_ok(&["--target", "app", "-t", "app", ctx_s]);
    assert!(
        !out.contains("exit 7"),
        "the broken stage was built:\n{out}"
    );
    assert!(out.contains("base\n"), "RUN output is shown:\n{out}");
    let (guard, mnt) = env.mount("app", "mnt");
    assert_eq!(
        std::fs::read_to_string(mnt.join("copied.txt")).unwrap(),
        "base\n"
    );
    guard.unmount().unwrap();
    // The last stage by default: `broken` is not it either, but `--target broken` fails.
    let out = env.build(&["--target", "broken", ctx_s]);
    assert!(!out.status.success());
    let out = env.build(&["--target", "nosuch", ctx_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nosuch"), "{err}");
}

#[test]
fn build_bad_input_is_named_and_leaves_nothing() {
    let Some(env) = Env::new("build_bad_input_is_named_and_leaves_nothing") else {
        return;
    };
    let outside = env.s.dir.path().join("secret");
    std::fs::write(&outside, "secret\n").unwrap();
    let before = env.images();
    let cases: &[(&str, &str, &[&str])] = &[
        ("syntax", "FROM rfs/busybox:latest\nENV\n", &["line 2"]),
        (
            "unknown",
            "FROM rfs/busybox:latest\nRUN true\nFROBNICATE now\n",
            &["line 3", "FROBNICATE"],
        ),
        (
            "missing",
            "FROM rfs/busybox:latest\nCOPY nothere /x\n",
            &["line 2", "nothere"],
        ),
        (
            "dotdot",
            "FROM rfs/busybox:latest\nCOPY ../secret /x\n",
            &["line 2", "outside the build context"],
        ),
        (
            "symlink-out",
            "FROM rfs/busybox:latest\nCOPY out /x\n",
            &["line 2", "outside the build context"],
        ),
        (
            "failing-run",
            "FROM rfs/busybox:latest\nRUN echo one\nRUN echo two; exit 42\n",
            &["line 3", "status 42", "STEP 3/3"],
        ),
        (
            "unknown-stage",
            "FROM rfs/busybox:latest AS one\nCOPY --from=nostage /x /y\n",
            &["line 2", "nostage", "no stage of that name"],
        ),
        (
            "no-base",
            "FROM nosuch/image:1\n",
            &["line 1", "not in the store"],
        ),
        // Out of scope, and said so: `RUN --mount` and `ADD` of a git repository.
        (
            "run-mount",
            "FROM rfs/busybox:latest\nRUN --mount=type=cache,target=/c true\n",
            &["line 2", "RUN --mount", "not supported"],
        ),
        (
            "add-git",
            "FROM rfs/busybox:latest\nADD https://github.com/moby/moby.git /src\n",
            &["line 2", "git repository", "not supported"],
        ),
    ];
    for (name, dockerfile, wants) in cases {
        let ctx = env.context(&format!("ctx-{name}"), &[("Dockerfile", dockerfile)]);
        std::os::unix::fs::symlink(&outside, ctx.join("out")).unwrap();
        let tag = format!("bad-{name}");
        let out = env.build(&["-t", &tag, ctx.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: succeeded:\n{}", text(&out));
        for w in *wants {
            assert!(err.contains(w), "{name}: {w:?} not in the error: {err}");
        }
        assert!(
            err.contains(&ctx.join("Dockerfile").display().to_string()),
            "{name}: the Dockerfile is named: {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{name}: one error line: {err}"
        );
        env.assert_nothing_left();
    }
    assert_eq!(env.images(), before, "nothing tagged");
    // 1 MB of garbage: one clear error, no panic.
    let ctx = env.s.mkdir("ctx-garbage");
    let garbage: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(ctx.join("Dockerfile"), garbage).unwrap();
    let out = env.build(&[ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn build_result_runs_with_rfs_run() {
    let Some(env) = Env::new("build_result_runs_with_rfs_run") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\nRUN echo visible-output && echo written-by-run > /msg\n\
             ENTRYPOINT []\nCMD [\"cat\", \"/msg\"]\n",
        )],
    );
    // -q: only the id, not even the RUN's output; --label: on the image.
    let (id, out) = env.build_ok(&[
        "-q",
        "--label",
        "org.example.built-by=rfs",
        "-t",
        "runme",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out, format!("{id}\n"));
    assert_eq!(
        env.config(&id)["config"]["Labels"]["org.example.built-by"],
        serde_json::json!("rfs")
    );
    let out = env.rfs(&["run".as_ref(), "--rm".as_ref(), "runme".as_ref()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written-by-run\n");
}

#[test]
fn build_cache_hits_misses_on_content_and_no_cache() {
    let Some(env) = Env::new("build_cache_hits_misses_on_content_and_no_cache") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/busybox:latest\nUSER root\nRUN echo ran-first; echo 1 > /first\n\
                 COPY data.txt /data.txt\nRUN echo ran-second; cat /data.txt > /second\n",
            ),
            ("data.txt", "one\n"),
        ],
    );
    let ctx_s = ctx.to_str().unwrap();
    let (id1, out1) = env.build_ok(&["-t", "cached", ctx_s]);
    assert!(
        !out1.contains("Using cache") && ran(&out1, "ran-first"),
        "{out1}"
    );
    let blobs = env.blob_count();
    let start = Instant::now();
    let (id2, out2) = env.build_ok(&["-t", "cached", ctx_s]);
    let took = start.elapsed();
    assert_eq!(id1, id2, "an unchanged rebuild gives the same image");
    assert_eq!(out2.matches("--> Using cache").count(), 4, "{out2}");
    assert!(
        !ran(&out2, "ran-first") && !ran(&out2, "ran-second"),
        "{out2}"
    );
    assert_eq!(env.blob_count(), blobs, "an unchanged rebuild adds nothing");
    assert!(
        took < Duration::from_secs(5),
        "cached rebuild took {took:?}"
    );
    // A new mtime is no change.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("data.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let (id3, _) = env.build_ok(&["-t", "cached", ctx_s]);
    assert_eq!(id3, id1, "an mtime change is no change");
    // New content: the steps before the COPY are cached, the COPY and after run again.
    std::fs::write(ctx.join("data.txt"), "two\n").unwrap();
    let (id4, out4) = env.build_ok(&["-t", "cached", ctx_s]);
    assert_ne!(id4, id1);
    assert_eq!(out4.matches("--> Using cache").count(), 2, "{out4}");
    assert!(
        !ran(&out4, "ran-first") && ran(&out4, "ran-second"),
        "{out4}"
    );
    let (guard, mnt) = env.mount("cached", "mnt");
    assert_eq!(
        std::fs::read_to_string(mnt.join("second")).unwrap(),
        "two\n"
    );
    guard.unmount().unwrap();
    // --no-cache runs everything.
    let (_, out5) = env.build_ok(&["--no-cache", ctx_s]);
    assert!(
        !out5.contains("Using cache") && ran(&out5, "ran-first"),
        "{out5}"
    );
    // `--chown` is not in `created_by` (as buildah writes it) but is in the cache key: the
    // same content with another owner is a miss from the COPY on.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rfs/busybox:latest\nUSER root\nRUN echo ran-first; echo 1 > /first\n\
         COPY --chown=1:1 data.txt /data.txt\nRUN echo ran-second; cat /data.txt > /second\n",
    )
    .unwrap();
    let (_, out6) = env.build_ok(&["-t", "chowned", ctx_s]);
    assert_eq!(out6.matches("--> Using cache").count(), 2, "{out6}");
    assert!(ran(&out6, "ran-second"), "{out6}");
    let (guard, mnt) = env.mount("chowned", "mnt-chowned");
    let md = std::fs::metadata(mnt.join("data.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1, 1));
    guard.unmount().unwrap();
    assert!(!is_mounted(&mnt));
}

/// `rfs builder prune` deletes the build cache and the layers only it named (a stage's that no
/// image has): the store shrinks, a rebuild misses the cache, and the tagged image still runs.
/// `rfs prune --build-cache` does the same.
#[test]
fn build_cache_prune_frees_the_cache_and_its_layers() {
    let Some(env) = Env::new("build_cache_prune_frees_the_cache_and_its_layers") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest AS stage\nUSER root\n\
             RUN echo ran-stage; head -c 100000 /dev/urandom > /big; echo staged > /out\n\
             FROM rfs/busybox:latest\nUSER root\nCOPY --from=stage /out /out\n\
             RUN echo ran-final; cat /out > /final\nENTRYPOINT []\nCMD [\"cat\", \"/final\"]\n",
        )],
    );
    let ctx_s = ctx.to_str().unwrap();
    let cache = env.root.join("build-cache");
    let entries = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    let (id1, _) = env.build_ok(&["-t", "kept", ctx_s]);
    assert!(entries() > 0, "the build wrote its cache");
    let (_, out) = env.build_ok(&["-t", "kept", ctx_s]);
    assert!(!ran(&out, "ran-stage"), "a rebuild hits the cache: {out}");
    let blobs = env.blob_count();

    let out = env.rfs(&["builder".as_ref(), "prune".as_ref(), "-f".as_ref()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Deleted build cache objects:") && said.contains("Total reclaimed space:"),
        "{said}"
    );
    assert_eq!(entries(), 0, "no cache entry left");
    // The stage's RUN layer (100 kB of noise) was the cache's alone.
    assert!(
        env.blob_count() < blobs,
        "the store shrank: {} -> {}",
        blobs,
        env.blob_count()
    );
    let out = env.rfs(&["run".as_ref(), "--rm".as_ref(), "kept".as_ref()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "staged\n");

    // After the prune a rebuild misses; the one hit is the second stage's `USER root`, the
    // same step as the first stage's, which this build has just made.
    let (id2, out) = env.build_ok(&["-t", "kept", ctx_s]);
    assert!(
        out.matches("--> Using cache").count() == 1
            && ran(&out, "ran-stage")
            && ran(&out, "ran-final"),
        "after the prune a rebuild misses: {out}"
    );
    assert_ne!(id1, id2);

    let out = env.rfs(&["prune".as_ref(), "--build-cache".as_ref()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted build cache objects:"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(), 0, "no cache entry left");
    let out = env.rfs(&["run".as_ref(), "--rm".as_ref(), "kept".as_ref()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "staged\n",
        "{}",
        text(&out)
    );
    env.assert_nothing_left();
}

/// Whether a build's output has `line` on a line of its own (a RUN's output, not its STEP).
fn ran(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// A rootless build as the unprivileged user `rfstest` (subuid range): RUN as the
/// container's root changes ownership, COPY --chown records it, and the layers carry the
/// image's ids, not the user's.
#[test]
fn build_rootless_as_an_unprivileged_user() {
    let Some(images) = images_dir("build_rootless_as_an_unprivileged_user") else {
        return;
    };
    crate::run::ensure_user("rfstest");
    crate::run::ensure_subid_range("rfstest");
    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = s.mkdir("rfstest");
    let bin = crate::common::copy_of_rfs(&s.dir.path().join("rfs"));
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = home.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rfs/busybox:latest\nUSER root\n\
         RUN id -u > /uid && mkdir -p /srv/data && echo x > /srv/data/f && chown -R 1000:1000 /srv/data\n\
         COPY --chown=app hello.txt /home/app/\n",
    )
    .unwrap();
    let st = Command::new("chown")
        .args(["-R", "rfstest"])
        .arg(&home)
        .status()
        .unwrap();
    assert!(st.success());
    let root = home.join("root");
    let script = format!(
        "cd / && export RFS_ROOT={root} && {bin} load -i {archive} && {bin} build -t rootless {ctx}",
        root = root.display(),
        bin = bin.display(),
        archive = images.join("busybox-docker-archive.tar").display(),
        ctx = ctx.display(),
    );
    let out = Command::new("su")
        .args(["rfstest", "-s", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "rootless build: {}", text(&out));
    // Mounted by root with the image's recorded ids.
    let mnt = s.mkdir("mnt");
    let guard = MountGuard::rfs(
        &[
            "mount".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
            "--read-only".as_ref(),
            "rootless".as_ref(),
        ],
        &mnt,
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(mnt.join("uid")).unwrap(), "0\n");
    for p in ["srv/data", "srv/data/f", "home/app/hello.txt"] {
        let m = std::fs::metadata(mnt.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
    }
    let m = std::fs::metadata(mnt.join("uid")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "the container root's file is root's"
    );
    guard.unmount().unwrap();
}

#[test]
fn build_heredocs_for_run_and_copy() {
    let Some(env) = Env::new("build_heredocs_for_run_and_copy") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\n\
             RUN <<EOF\necho one > /script-ran\necho two >> /script-ran\nEOF\n\
             COPY <<CONF /etc/app.conf\nkey=value\nsecond line\nCONF\n",
        )],
    );
    let (id, _) = env.build_ok(&[ctx.to_str().unwrap()]);
    let (guard, mnt) = env.mount(&id, "mnt");
    assert_eq!(
        std::fs::read_to_string(mnt.join("script-ran")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/app.conf")).unwrap(),
        "key=value\nsecond line\n"
    );
    guard.unmount().unwrap();
}

/// Ctrl-C (SIGINT) during a RUN ends the build: non-zero, nothing tagged, nothing mounted,
/// no step directory left.
#[test]
fn build_interrupted_leaves_nothing() {
    let Some(env) = Env::new("build_interrupted_leaves_nothing") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\nRUN echo started; sleep 61\n",
        )],
    );
    let before = env.images();
    let mut child = Command::new(rfs_bin())
        .env("RFS_ROOT", &env.root)
        .args(["build", "-t", "interrupted"])
        .arg(&ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the RUN's own output (not its STEP line).
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !ran(&seen, "started") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "rfs build ended before the RUN started: {seen}");
        seen.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rfs build did not end on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert_eq!(env.images(), before, "nothing tagged");
    env.assert_nothing_left();
    // The step's processes went with it.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 61"),
        "the RUN's command survived"
    );
}

/// SIGINT between steps (here: while a COPY runs, or just before the next step) ends the
/// build at the next step with nothing left.
#[test]
fn build_interrupted_between_steps_leaves_nothing() {
    let Some(env) = Env::new("build_interrupted_between_steps_leaves_nothing") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/busybox:latest\nUSER root\nRUN echo first\nCOPY big /big\n\
                 RUN echo never-reached\n",
            ),
            ("big", &"x".repeat(64 << 20)),
        ],
    );
    let mut child = Command::new(rfs_bin())
        .env("RFS_ROOT", &env.root)
        .args(["build", "-t", "interrupted"])
        .arg(&ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("COPY big") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "rfs build ended early: {seen}");
        seen.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{seen}{rest}");
    assert!(!ran(&rest, "never-reached"), "{rest}");
    env.assert_nothing_left();
}

/// `--timestamp` (or `SOURCE_DATE_EPOCH`): two builds of the same Dockerfile in two stores
/// (no shared cache), from two copies of the context with different mtimes, at different
/// times, give the same image digest.
#[test]
fn build_with_a_timestamp_is_reproducible() {
    let Some(a) = Env::new("build_with_a_timestamp_is_reproducible") else {
        return;
    };
    let b = Env::new("build_with_a_timestamp_is_reproducible").unwrap();
    let dockerfile = "FROM rfs/busybox:latest\nUSER root\n\
                      RUN mkdir -p /srv && echo made > /srv/made && rm /opt/data/keep\n\
                      COPY . /ctx/\nENV BUILT=1\n";
    let files = [
        ("Dockerfile", dockerfile),
        ("data/a.txt", "a\n"),
        ("b.txt", "b\n"),
    ];
    let ctx_a = a.context("ctx", &files);
    std::thread::sleep(Duration::from_millis(1100));
    let ctx_b = b.context("ctx", &files);
    let (id_a, _) = a.build_ok(&["--timestamp", "1700000000", ctx_a.to_str().unwrap()]);
    let out = Command::new(rfs_bin())
        .env("RFS_ROOT", &b.root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(&ctx_b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id_b = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(id_a, id_b, "same digest from two builds");
    assert_eq!(
        a.config(&id_a)["created"],
        serde_json::json!("2023-11-14T22:13:20Z")
    );
    // Without a timestamp the times are the build's: another digest.
    let (id_c, _) = a.build_ok(&["--no-cache", ctx_a.to_str().unwrap()]);
    assert_ne!(id_c, id_a);
}

/// Podman with a storage of its own (vfs), emptied on drop.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let d = &self.dir;
        let mut c = Command::new("podman");
        c.env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("HOME", d.join("home"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ]);
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rmi", "-a", "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The built image leaves rfs as an archive that podman loads and runs.
#[test]
fn build_result_runs_with_podman_after_rfs_save() {
    let Some(env) = Env::new("build_result_runs_with_podman_after_rfs_save") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/busybox:latest\nUSER root\nRUN echo from-rfs-build > /msg\n\
                 COPY note.txt /note.txt\nENTRYPOINT []\nCMD [\"cat\", \"/msg\", \"/note.txt\"]\n",
            ),
            ("note.txt", "copied\n"),
        ],
    );
    env.build_ok(&["-t", "localhost/rfs-built:1", ctx.to_str().unwrap()]);
    let archive = env.s.dir.path().join("built.tar");
    let out = env.rfs(&[
        "save".as_ref(),
        "localhost/rfs-built:1".as_ref(),
        "-o".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "rfs save: {}", text(&out));
    let podman = Podman {
        dir: env.s.mkdir("podman"),
    };
    std::fs::create_dir_all(podman.dir.join("xdg")).unwrap();
    std::fs::create_dir_all(podman.dir.join("home")).unwrap();
    let out = podman
        .cmd()
        .args(["load", "-q", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "podman load: {}", text(&out));
    let out = podman
        .cmd()
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroups=disabled",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "localhost/rfs-built:1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman run: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-rfs-build\ncopied\n"
    );
}

/// A Debian base (merged /usr: `/bin` is a symlink): a RUN that adds a user and deletes and
/// renames many lower files, a COPY through the `/bin` symlink, a WORKDIR that creates a
/// directory. Tree, config, layers and history as the Docker engine builds them.
#[test]
fn build_on_debian_matches_the_docker_engine() {
    let Some(env) = Env::new("build_on_debian_matches_the_docker_engine") else {
        return;
    };
    let images = images_dir("build_on_debian_matches_the_docker_engine").unwrap();
    let debian = images.join("docker/debian-docker-save.tar");
    let out = env.rfs(&["load".as_ref(), "-i".as_ref(), debian.as_os_str()]);
    assert!(out.status.success(), "rfs load: {}", text(&out));
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/debian:bookworm\n\
                 RUN useradd -m -u 1500 builder && echo x > /home/builder/f \\\n\
                 \x20   && rm -rf /usr/share/doc /usr/share/man && mv /etc/apt /etc/apt-moved\n\
                 COPY tool /bin/tool\n\
                 WORKDIR /home/builder/work\n\
                 USER builder\n\
                 CMD [\"tool\"]\n",
            ),
            ("tool", "#!/bin/sh\necho tool\n"),
        ],
    );
    std::fs::set_permissions(ctx.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut docker = Docker::start(&env.s);
    docker.run(&[
        "load".as_ref(),
        "-q".as_ref(),
        "-i".as_ref(),
        debian.as_os_str(),
    ]);
    let tag = format!("rfs-build-test-debian-{}:latest", std::process::id());
    docker.build(&tag, &[ctx.to_str().unwrap()]);
    let (id, _) = env.build_ok(&["-t", &tag, ctx.to_str().unwrap()]);
    assert_eq!(
        config_fields(&env.config(&id)),
        config_fields(&docker.config(&tag, &env.s)),
        "config, layers and history differ"
    );
    let export = env.s.dir.path().join("export");
    docker.export(&tag, &export);
    let (guard, mnt) = env.mount(&tag, "mnt");
    assert_same_tree(
        "debian",
        &without_runtime_files(tree_listing(&mnt)),
        &without_runtime_files(tree_listing(&export)),
    );
    assert!(
        mnt.join("usr/bin/tool").is_file(),
        "COPY went through /bin -> usr/bin"
    );
    guard.unmount().unwrap();
}

/// ONBUILD triggers are stored, and run when a later build starts from the image.
#[test]
fn build_onbuild_triggers_run_in_the_child_build() {
    let Some(env) = Env::new("build_onbuild_triggers_run_in_the_child_build") else {
        return;
    };
    let parent = env.context(
        "parent",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\nONBUILD RUN echo triggered > /triggered\n",
        )],
    );
    let (pid, _) = env.build_ok(&["-t", "with-trigger", parent.to_str().unwrap()]);
    assert_eq!(
        env.config(&pid)["config"]["OnBuild"],
        serde_json::json!(["RUN echo triggered > /triggered"])
    );
    let child = env.context(
        "child",
        &[("Dockerfile", "FROM with-trigger\nRUN cat /triggered\n")],
    );
    let (cid, out) = env.build_ok(&[child.to_str().unwrap()]);
    assert!(ran(&out, "triggered"), "{out}");
    // The child does not pass the trigger on.
    assert!(
        env.config(&cid)["config"]["OnBuild"].is_null(),
        "{}",
        env.config(&cid)
    );
}

/// `RUN --network=none` runs with only a loopback interface; a plain RUN has the host's
/// network, as Docker's builder.
#[test]
fn build_run_network_host_by_default_none_on_request() {
    let Some(env) = Env::new("build_run_network_host_by_default_none_on_request") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rfs/busybox:latest\nUSER root\n\
             RUN --network=none cat /proc/net/dev > /none.txt\n\
             RUN cat /proc/net/dev > /host.txt\n",
        )],
    );
    let (id, _) = env.build_ok(&[ctx.to_str().unwrap()]);
    let interfaces = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
            .collect();
        v.sort();
        v
    };
    let (guard, mnt) = env.mount(&id, "mnt");
    let none = interfaces(&std::fs::read_to_string(mnt.join("none.txt")).unwrap());
    let host = interfaces(&std::fs::read_to_string(mnt.join("host.txt")).unwrap());
    guard.unmount().unwrap();
    assert_eq!(none, vec!["lo".to_string()]);
    assert_eq!(
        host,
        interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap())
    );
}

/// A private registry (`docker-registry`, the distribution server) on 127.0.0.1, stopped by
/// pid on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(s: &Scratch) -> Registry {
        let dir = s.mkdir("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        let r = Registry { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `FROM REGISTRY/NAME:TAG` of an image the store lacks pulls it first.
#[test]
fn build_from_a_registry_reference_pulls_it() {
    let Some(env) = Env::new("build_from_a_registry_reference_pulls_it") else {
        return;
    };
    let images = images_dir("build_from_a_registry_reference_pulls_it").unwrap();
    let registry = Registry::start(&env.s);
    let reference = format!("127.0.0.1:{}/test/busybox:pulled", registry.port);
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!(
            "docker-archive:{}",
            images.join("busybox-docker-archive.tar").display()
        ))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {reference}\nUSER root\nRUN echo on-pulled > /pulled.txt\n"),
        )],
    );
    let (id, out) = env.build_ok(&["-t", "from-registry", ctx.to_str().unwrap()]);
    assert!(out.contains(&format!("Pulling {reference}")), "{out}");
    assert!(env.images().contains("test/busybox"), "{}", env.images());
    let (guard, mnt) = env.mount(&id, "mnt");
    assert_eq!(
        std::fs::read_to_string(mnt.join("pulled.txt")).unwrap(),
        "on-pulled\n"
    );
    guard.unmount().unwrap();

    // The tag moves to another image in the registry (the Debian test image): a build uses
    // the base it has, and --pull fetches the new one.
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", images.join("debian-oci").display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", text(&out));
    let probe = env.context(
        "probe",
        &[(
            "Dockerfile",
            &format!(
                "FROM {reference}\nRUN test -e /etc/debian_version && echo debian || echo other\n"
            ),
        )],
    );
    let (_, kept) = env.build_ok(&["--no-cache", probe.to_str().unwrap()]);
    assert!(
        !kept.contains("Pulling") && kept.contains("\nother\n"),
        "{kept}"
    );
    let (_, pulled) = env.build_ok(&["--no-cache", "--pull", probe.to_str().unwrap()]);
    assert!(pulled.contains(&format!("Pulling {reference}")), "{pulled}");
    assert!(pulled.contains("\ndebian\n"), "{pulled}");
}

/// `--platform` picks the base from a multi-platform layout and sets the TARGET* args; a RUN
/// for another architecture is refused with a clear error.
#[test]
fn build_platform_picks_the_base_and_sets_target_args() {
    let Some(env) = Env::new("build_platform_picks_the_base_and_sets_target_args") else {
        return;
    };
    let images = images_dir("build_platform_picks_the_base_and_sets_target_args").unwrap();
    let multi = images.join("busybox-multiarch-oci");
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {}\nARG TARGETARCH\nARG TARGETPLATFORM\n\
                     COPY note.txt /built-for-$TARGETARCH.txt\n",
                    multi.display()
                ),
            ),
            ("note.txt", "note\n"),
        ],
    );
    let (id, _) = env.build_ok(&["--platform", "linux/arm64/v8", ctx.to_str().unwrap()]);
    let config = env.config(&id);
    assert_eq!(config["architecture"], serde_json::json!("arm64"));
    let (guard, mnt) = env.mount(&id, "mnt");
    assert!(mnt.join("built-for-arm64.txt").is_file());
    // The arm64 entry of the layout is the placeholder with /ARCH.txt, not busybox.
    assert!(mnt.join("ARCH.txt").is_file() && !mnt.join("bin").exists());
    guard.unmount().unwrap();
    let (id, _) = env.build_ok(&["--platform", "linux/amd64", ctx.to_str().unwrap()]);
    let (guard, mnt) = env.mount(&id, "mnt2");
    assert!(mnt.join("built-for-amd64.txt").is_file() && mnt.join("bin").exists());
    guard.unmount().unwrap();
    // RUN in the arm64 image on this machine: refused, named.
    let ctx = env.context(
        "ctx-run",
        &[(
            "Dockerfile",
            &format!("FROM {}\nRUN true\n", multi.display()),
        )],
    );
    let out = env.build(&["--platform", "linux/arm64/v8", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not emulate"),
        "{err}"
    );
    env.assert_nothing_left();
}

/// `Dockerfile.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`.
#[test]
fn build_dockerfile_specific_ignore_file_wins() {
    let Some(env) = Env::new("build_dockerfile_specific_ignore_file_wins") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM rfs/busybox:latest\nCOPY . /ctx/\n"),
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            (".dockerignore", "a.txt\n"),
            ("Dockerfile.dockerignore", "b.txt\n"),
        ],
    );
    let (id, _) = env.build_ok(&[ctx.to_str().unwrap()]);
    let (guard, mnt) = env.mount(&id, "mnt");
    assert!(
        mnt.join("ctx/a.txt").is_file(),
        "the context's .dockerignore is not used"
    );
    assert!(
        !mnt.join("ctx/b.txt").exists(),
        "Dockerfile.dockerignore applies"
    );
    guard.unmount().unwrap();
}

/// A static file server on 127.0.0.1 (Python's `http.server`), stopped by pid on drop.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let server = FileServer { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "http.server not up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ADD URL DEST`: downloaded, named after the URL (or put at DEST), mode 0600, the server's
/// Last-Modified time, never extracted; a URL the server does not have fails naming it and the
/// Dockerfile line, and tags nothing.
#[test]
fn build_add_of_a_url_downloads_it() {
    let Some(env) = Env::new("build_add_of_a_url_downloads_it") else {
        return;
    };
    let served = env.s.mkdir("served");
    std::fs::write(served.join("notes.txt"), "from the web\n").unwrap();
    // An archive: ADD of a URL keeps it as it is.
    let st = Command::new("tar")
        .arg("-czf")
        .arg(served.join("pack.tar.gz"))
        .arg("-C")
        .arg(&served)
        .arg("notes.txt")
        .status()
        .unwrap();
    assert!(st.success());
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::open(served.join("notes.txt"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let server = FileServer::start(&served);
    let base = format!("http://127.0.0.1:{}", server.port);
    let dockerfile = format!(
        "FROM rfs/busybox:latest\nADD {base}/notes.txt /opt/\nADD {base}/notes.txt /opt/renamed\n\
         ADD {base}/pack.tar.gz /opt/\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)]);
    let (id, _) = env.build_ok(&["-t", "fetched", ctx.to_str().unwrap()]);
    let (guard, mnt) = env.mount(&id, "mnt");
    for name in ["opt/notes.txt", "opt/renamed"] {
        let path = mnt.join(name);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "from the web\n",
            "{name}"
        );
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o600, "{name}");
        assert_eq!(md.mtime(), 1_700_000_000, "{name}: Last-Modified");
        assert_eq!((md.uid(), md.gid()), (0, 0), "{name}");
    }
    assert!(
        mnt.join("opt/pack.tar.gz").is_file(),
        "a downloaded archive is not extracted"
    );
    guard.unmount().unwrap();

    let missing = format!("FROM rfs/busybox:latest\nADD {base}/nope.txt /opt/\n");
    let ctx = env.context("ctx2", &[("Dockerfile", &missing)]);
    let out = env.build(&["-t", "never", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.txt") && err.contains("line 2") && err.contains("404"),
        "{err}"
    );
    assert!(!env.images().contains("never"));
    env.assert_nothing_left();
}

/// `--squash`: the layers the build adds become one on top of the base's, and the image shows
/// the same tree as the unsquashed build (deleted, renamed, replaced and hard-linked files
/// included); the history keeps every step, with one layer among the build's.
#[test]
fn build_squash_gives_one_layer_with_the_same_tree() {
    let Some(env) = Env::new("build_squash_gives_one_layer_with_the_same_tree") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rfs/busybox:latest\nUSER root\n\
                 RUN rm /opt/data/remove && mv /opt/data/todir /opt/moved && echo one > /one\n\
                 COPY hello.txt /opt/\n\
                 RUN echo two >> /one && ln /one /one-link && rm -rf /opt/opq && mkdir /opt/opq \
                 && echo fresh > /opt/opq/new\n\
                 ENV DONE=1\n",
            ),
            ("hello.txt", "hello\n"),
        ],
    );
    let (plain, _) = env.build_ok(&["--no-cache", ctx.to_str().unwrap()]);
    let (squashed, out) = env.build_ok(&["--no-cache", "--squash", ctx.to_str().unwrap()]);
    assert!(out.contains("Squashing 3 layers into one"), "{out}");
    let (p, s) = (env.config(&plain), env.config(&squashed));
    let layers = |c: &Value| c["rootfs"]["diff_ids"].as_array().unwrap().len();
    assert_eq!(layers(&s), layers(&p) - 2, "three added layers became one");
    let history = |c: &Value| c["history"].as_array().unwrap().clone();
    assert_eq!(
        history(&s).len(),
        history(&p).len(),
        "every step is in the history"
    );
    let with_layer = |c: &Value| {
        history(c)
            .iter()
            .filter(|h| h["empty_layer"].as_bool() != Some(true))
            .count()
    };
    assert_eq!(with_layer(&s), layers(&s));
    let (g1, m1) = env.mount(&plain, "plain");
    let (g2, m2) = env.mount(&squashed, "squashed");
    assert_same_tree("--squash", &tree_listing(&m2), &tree_listing(&m1));
    assert_eq!(
        std::fs::read_to_string(m2.join("one")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        std::fs::metadata(m2.join("one")).unwrap().ino(),
        std::fs::metadata(m2.join("one-link")).unwrap().ino()
    );
    assert!(!m2.join("opt/data/remove").exists());
    g2.unmount().unwrap();
    g1.unmount().unwrap();
    env.assert_nothing_left();
}

/// buildah with private storage (vfs, no mounts) in the test's scratch directory.
struct Buildah {
    root: PathBuf,
    run: PathBuf,
}

impl Buildah {
    fn new(s: &Scratch) -> Buildah {
        Buildah {
            root: s.mkdir("buildah-root"),
            run: s.mkdir("buildah-run"),
        }
    }

    fn ok(&self, args: &[&OsStr]) -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .output()
            .expect("running buildah");
        assert!(out.status.success(), "buildah {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The other oracle: `buildah bud --format docker` of the single-stage Dockerfile gives the
/// same tree and config (but for the label buildah adds) as `rfs build`.
#[test]
fn build_matches_buildah_bud() {
    let Some(env) = Env::new("build_matches_buildah_bud") else {
        return;
    };
    let images = images_dir("build_matches_buildah_bud").unwrap();
    let ctx = oracle_context(&env);
    let ctx_s = ctx.to_str().unwrap();
    let buildah = Buildah::new(&env.s);
    let base = format!(
        "docker-archive:{}",
        images.join("busybox-docker-archive.tar").display()
    );
    buildah.ok(&["pull".as_ref(), "-q".as_ref(), base.as_ref()]);
    let args = ["--build-arg", "GREETING=hi", ctx_s];
    let mut bud: Vec<&OsStr> = [
        "bud",
        "--layers",
        "--format",
        "docker",
        "-q",
        "-t",
        "bh-single",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    bud.extend(args.iter().map(OsStr::new));
    buildah.ok(&bud);
    let archive = env.s.dir.path().join("bh-single.tar");
    let dest = format!("docker-archive:{}:bh-single:latest", archive.display());
    buildah.ok(&["push".as_ref(), "bh-single".as_ref(), dest.as_ref()]);
    let out = env.rfs(&[
        "load".as_ref(),
        "-q".as_ref(),
        "-i".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "rfs load: {}", text(&out));

    let mut rargs = vec!["-t", "rfs-single"];
    rargs.extend(args);
    let (id, _) = env.build_ok(&rargs);
    let inspect: Value = serde_json::from_slice(
        &env.rfs(&["inspect".as_ref(), "bh-single:latest".as_ref()])
            .stdout,
    )
    .unwrap();
    let bh_id = inspect[0]["Id"].as_str().unwrap().to_string();
    let fields = |id: &str| {
        let mut f = config_fields(&env.config(id));
        let o = f.as_object_mut().unwrap();
        // Layer counts and empty_layer flags follow each builder's own rules.
        o.remove("layers");
        o.remove("history");
        if let Some(labels) = o.get_mut("Labels").and_then(Value::as_object_mut) {
            labels.remove("io.buildah.version");
        }
        // buildah moves a variable an ENV replaces to the end; Docker (and rfs, which the
        // Docker oracle checks) keep its place: the same variables, compared as a set.
        if let Some(env) = o.get_mut("Env").and_then(Value::as_array_mut) {
            env.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
        f
    };
    assert_eq!(fields(&id), fields(&bh_id), "config");
    assert_eq!(
        copy_created_by(&env.config(&id)),
        copy_created_by(&env.config(&bh_id)),
        "created_by"
    );
    let (g1, m1) = env.mount(&id, "mnt-rfs");
    let (g2, m2) = env.mount(&bh_id, "mnt-buildah");
    let mut got = without_runtime_files(tree_listing(&m1));
    let mut want = without_runtime_files(tree_listing(&m2));
    // `ADD bundle.tar.gz /opt/bundle/`: buildah gives the new destination directory the
    // owner of the archive's `./` entry (1234:5678), Docker's engine makes it root's, and rfs
    // follows Docker (which `build_matches_the_docker_engine` checks entry by entry). Only
    // that entry's owner differs; its kind and mode must agree.
    let kind_and_mode =
        |v: Option<String>| v.map(|v| v.split(' ').take(2).collect::<Vec<_>>().join(" "));
    assert_eq!(
        kind_and_mode(got.remove("./opt/bundle")),
        kind_and_mode(want.remove("./opt/bundle")),
        "./opt/bundle"
    );
    assert_same_tree("buildah bud", &got, &want);
    g2.unmount().unwrap();
    g1.unmount().unwrap();

    // The multi-stage Dockerfile: `COPY --from=STAGE` reads as buildah writes it (no
    // `--from`, no flags at all), for a file and for a directory.
    let multi = ctx.join("Dockerfile.multi");
    let multi = multi.to_str().unwrap();
    let mut bud: Vec<&OsStr> = ["bud", "--layers", "--format", "docker", "-q"]
        .iter()
        .map(OsStr::new)
        .collect();
    bud.extend(["-t", "bh-multi", "-f", multi, ctx_s].map(OsStr::new));
    buildah.ok(&bud);
    let archive = env.s.dir.path().join("bh-multi.tar");
    let dest = format!("docker-archive:{}:bh-multi:latest", archive.display());
    buildah.ok(&["push".as_ref(), "bh-multi".as_ref(), dest.as_ref()]);
    let out = env.rfs(&[
        "load".as_ref(),
        "-q".as_ref(),
        "-i".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "rfs load: {}", text(&out));
    let (id, _) = env.build_ok(&["-t", "rfs-multi", "-f", multi, ctx_s]);
    let inspect: Value = serde_json::from_slice(
        &env.rfs(&["inspect".as_ref(), "bh-multi:latest".as_ref()])
            .stdout,
    )
    .unwrap();
    let bh_id = inspect[0]["Id"].as_str().unwrap();
    let got = copy_created_by(&env.config(&id));
    assert_eq!(
        got,
        copy_created_by(&env.config(bh_id)),
        "multi: created_by"
    );
    assert!(
        got.last()
            .is_some_and(|c| c.ends_with("COPY file:<digest> in /from-final ")),
        "{got:?}"
    );
    env.assert_nothing_left();
}

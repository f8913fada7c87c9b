//! `rfs pull`, `rfs push`, `rfs login` and `rfs logout` against a real registry: Debian's
//! `docker-registry` (CNCF distribution 2.8) started on 127.0.0.1 by each test ([`Registry`],
//! stopped by pid on drop), seeded by skopeo from the test images. The oracles are the source
//! images (config digest = image ID, diff_ids, the tree `rfs mount` shows of the source),
//! skopeo and podman reading what rfs pushed or wrote (`auth.json`), and the registry's access
//! log (which blobs were fetched).
//!
//! Helpers of its own: [`TokenServer`] (`tests/fixtures/tokend.py`, the Bearer token flow),
//! [`FaultProxy`] (an HTTP proxy between rfs and the registry that records requests and cuts,
//! throttles or fails answers), openssl-made CAs and certificates for TLS, and `script(1)` for
//! a terminal.
//!
//! Every rfs, skopeo and podman run gets a private store, `HOME` and `XDG_RUNTIME_DIR` in the
//! test's scratch dir, and no `REGISTRY_AUTH_FILE`, so no real credentials are read or written.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{MountGuard, Scratch, images_dir, rfs_bin};
use crate::images::tree_listing;

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `docker-registry serve` on 127.0.0.1, killed by pid (and waited for) on drop.
pub(crate) struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) host: String,
    /// Its directory: `config.yml`, `registry.log`, storage in `data/`.
    pub(crate) dir: PathBuf,
}

impl Registry {
    /// A plain-HTTP registry in `dir`.
    pub(crate) fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "", "", false)
    }

    /// A registry in `dir` with `http_extra` (lines indented under `http:`) and `extra`
    /// (top-level sections) in its config; `tls` says it speaks HTTPS (readiness is then a
    /// TCP connect, not a `GET /v2/`).
    pub(crate) fn start_with(dir: &Path, http_extra: &str, extra: &str, tls: bool) -> Registry {
        std::fs::create_dir_all(dir).expect("registry dir");
        let log_path = dir.join("registry.log");
        // The port is free when picked but another process may take it before the registry
        // binds it: start again on another one.
        for _ in 0..5 {
            let host = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{http_extra}{extra}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yml"), config).expect("config.yml");
            let log = std::fs::File::create(&log_path).expect("registry.log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("starting docker-registry (install it: scripts/install-deps.sh)");
            let mut reg = Registry {
                child,
                host,
                dir: dir.to_path_buf(),
            };
            let start = Instant::now();
            loop {
                if let Ok(Some(status)) = reg.child.try_wait() {
                    let log = reg.log();
                    if log.contains("address already in use") {
                        break;
                    }
                    panic!("docker-registry exited with {status} before it was ready:\n{log}");
                }
                if reg.ready(tls) {
                    return reg;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "docker-registry on {} not ready after 20 s:\n{}",
                    reg.host,
                    reg.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("docker-registry: no free port after 5 attempts");
    }

    fn ready(&self, tls: bool) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.host) else {
            return false;
        };
        if tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line.starts_with("HTTP/1.") && (line.contains(" 200") || line.contains(" 401"))
    }

    /// The registry's log so far (access lines included).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The access log lines of requests rfs made (user agent `rfs/…`).
    pub(crate) fn rfs_requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains("\" \"rfs/"))
            .map(str::to_owned)
            .collect()
    }

    /// How many `GET`s of a blob of `repository` rfs made.
    pub(crate) fn blob_gets(&self, repository: &str) -> usize {
        let want = format!("\"GET /v2/{repository}/blobs/sha256:");
        self.rfs_requests()
            .iter()
            .filter(|l| l.contains(&want))
            .count()
    }

    /// The file holding blob `hex` in the registry's storage.
    pub(crate) fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test token server (`tests/fixtures/tokend.py`), killed by pid on drop.
struct TokenServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TokenServer {
    /// Starts one in `dir` that knows `user:password` (and the identity token
    /// `refresh-<password>` for `user`): a key and self-signed certificate made by openssl,
    /// the port read from its first line of output.
    fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        std::fs::create_dir_all(dir).expect("tokend dir");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=rfs-test-token-issuer", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            dir.join("users"),
            format!("{user}:{password}\n@refresh-{password}:{user}\n"),
        )
        .expect("users");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokend.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("tokend.log")).expect("tokend.log"))
            .spawn()
            .expect("python3 (install python3-cryptography: scripts/install-deps.sh)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let mut server = TokenServer {
            child,
            port: 0,
            dir: dir.to_path_buf(),
        };
        server.port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "tokend.py did not print its port (got {line:?}):\n{}",
                server.log()
            )
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tokend.log")).unwrap_or_default()
    }

    /// The registry config section that sends clients here.
    fn auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: rfs-test-registry\n    issuer: rfs-test-issuer\n    rootcertbundle: {}\n",
            self.port,
            self.dir.join("cert.pem").display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's scratch dir: a private store, `HOME` and `XDG_RUNTIME_DIR` for every tool.
struct Env {
    s: Scratch,
    root: PathBuf,
    home: PathBuf,
    run: PathBuf,
}

impl Env {
    fn new() -> Env {
        let s = Scratch::new();
        let root = s.mkdir("root");
        let home = s.mkdir("home");
        let run = s.mkdir("run");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Env { s, root, home, run }
    }

    /// `program` with the private environment.
    fn tool(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.run)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// `rfs --root ROOT ARGS` with the private environment.
    fn rfs(&self, args: &[&str]) -> Command {
        let mut c = self.tool(rfs_bin());
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.rfs(args).output().expect("running rfs")
    }

    /// Runs rfs, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs rfs, which must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "rfs {args:?} succeeded; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!err.contains("panicked"), "rfs {args:?} panicked: {err}");
        err
    }

    /// Runs `program ARGS` with the private environment, which must succeed; returns stdout.
    fn tool_ok(&self, program: &str, args: &[&OsStr]) -> Vec<u8> {
        let out = self
            .tool(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e} (scripts/install-deps.sh)"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn skopeo(&self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.tool_ok("skopeo", &args)
    }

    /// `skopeo copy SRC docker://HOST/DEST` over plain HTTP, with `extra` options.
    fn seed(&self, src: &str, dest: &str, extra: &[&str]) {
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        let dest = format!("docker://{dest}");
        args.extend([src, dest.as_str()]);
        self.skopeo(&args);
    }

    /// The raw manifest of `image` (`HOST/REPO:TAG`) and its digest, as skopeo reads them.
    fn raw_manifest(&self, image: &str, extra: &[&str]) -> (serde_json::Value, String) {
        let refs = format!("docker://{image}");
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(&refs);
        let raw = self.skopeo(&args);
        (
            serde_json::from_slice(&raw).expect("manifest JSON"),
            format!("sha256:{}", sha256_hex(&raw)),
        )
    }

    /// The config of `image` as skopeo reads it, and its digest.
    fn config(&self, image: &str, extra: &[&str]) -> (serde_json::Value, String) {
        let refs = format!("docker://{image}");
        let mut args = vec!["inspect", "--raw", "--config", "--tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(&refs);
        let raw = self.skopeo(&args);
        (
            serde_json::from_slice(&raw).expect("config JSON"),
            format!("sha256:{}", sha256_hex(&raw)),
        )
    }

    fn inspect(&self, what: &str) -> serde_json::Value {
        let text = self.ok(&["inspect", what]);
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect JSON");
        assert_eq!(list.len(), 1, "{text}");
        list.remove(0)
    }

    /// Mounts `source` read-only on a fresh directory `name` (`rfs mount` with the private
    /// environment: it may pull).
    fn mount(&self, name: &str, source: &str) -> (MountGuard, PathBuf) {
        let mnt = self.s.mkdir(name);
        let mnt_text = mnt.to_str().expect("utf-8");
        // Guarded before it exists, so a failure below still unmounts.
        let guard = MountGuard::fuse_guard(&mnt);
        let out = self.run(&["mount", "--read-only", source, mnt_text]);
        assert!(
            out.status.success(),
            "rfs mount {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        while !crate::common::is_mounted(&mnt) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rfs mount {source} returned but nothing is mounted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (guard, mnt)
    }

    /// Writes the user's `~/.config/containers/registries.conf` (in the private HOME).
    fn registries_conf(&self, text: &str) {
        let dir = self.home.join(".config/containers");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("registries.conf"), text).expect("registries.conf");
    }

    /// How many partial downloads the store keeps.
    fn partial_count(&self) -> usize {
        std::fs::read_dir(self.root.join("partial")).map_or(0, Iterator::count)
    }

    /// The names in the store's `blobs/sha256`, temporary files included.
    fn blob_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|d| {
                d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// `["sha256:…", …]` of a JSON array.
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Asserts the image `name` of the store is the registry's `image`: its ID is the config
/// digest, its layers the config's diff_ids, and it is listed under its repository and tag.
fn assert_pulled(e: &Env, name: &str, image: &str, skopeo_extra: &[&str]) {
    let (config, config_digest) = e.config(image, skopeo_extra);
    let info = e.inspect(name);
    assert_eq!(info["Id"], config_digest.as_str(), "{info}");
    assert_eq!(
        strings(&info["RootFS"]["Layers"]),
        strings(&config["rootfs"]["diff_ids"])
    );
    let (repo, tag) = name.rsplit_once(':').expect("name:tag");
    let images = e.ok(&["images"]);
    assert!(
        crate::common::table_rows(&images)
            .iter()
            .any(|r| r.len() > 2 && r[0] == repo && r[1] == tag),
        "{name} not in rfs images:\n{images}"
    );
}

/// Asserts the pulled image `name` mounts to the tree the source image mounts to.
fn assert_same_tree(e: &Env, name: &str, source: &Path) {
    let (g1, pulled) = e.mount("pulled", name);
    let (g2, direct) = e.mount("source", source.to_str().expect("utf-8"));
    let mut got = tree_listing(&pulled);
    let mut want = tree_listing(&direct);
    got.remove(".");
    want.remove(".");
    assert!(want.len() > 10, "the source tree is too small: {want:?}");
    assert_eq!(got, want);
    g1.unmount().expect("unmount");
    g2.unmount().expect("unmount");
}

#[test]
fn pull_an_oci_image_and_mount_it() {
    let Some(images) = images_dir("pull_an_oci_image_and_mount_it") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let source = images.join("busybox-oci");
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(&format!("oci:{}:latest", source.display()), &image, &[]);
    let (manifest, manifest_digest) = e.raw_manifest(&image, &[]);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let out = e.run(&["pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rfs pull: {err}");
    assert!(err.contains("3 layers downloaded, 0 already"), "{err}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id, manifest["config"]["digest"].as_str().expect("digest"));
    assert_pulled(&e, &image, &image, &[]);
    assert_eq!(
        strings(&e.inspect(&image)["RepoDigests"]),
        [format!("{}/rfs/busybox@{manifest_digest}", reg.host)]
    );
    assert_same_tree(&e, &image, &source);
    // The registry served each blob once: the config and three layers.
    assert_eq!(reg.blob_gets("rfs/busybox"), 4, "{:#?}", reg.rfs_requests());
}

#[test]
fn pull_docker_v2s2_then_an_image_with_the_same_layers_fetches_no_blob() {
    let Some(images) = images_dir("pull_docker_v2s2") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let archive = images.join("busybox-docker-archive.tar");
    let v2s2 = format!("{}/rfs/v2s2:latest", reg.host);
    e.seed(
        &format!("docker-archive:{}", archive.display()),
        &v2s2,
        &["--format", "v2s2"],
    );
    let oci = format!("{}/rfs/busybox:1.0", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &oci,
        &[],
    );
    let (manifest, _) = e.raw_manifest(&v2s2, &[]);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    e.ok(&["pull", "-q", &v2s2]);
    assert_pulled(&e, &v2s2, &v2s2, &[]);
    assert_same_tree(&e, &v2s2, &archive);
    assert_eq!(reg.blob_gets("rfs/v2s2"), 4, "{:#?}", reg.rfs_requests());

    // Another repository with the same layers: the store has them, so no blob is fetched.
    let out = e.run(&["pull", &oci]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("0 layers downloaded, 3 already"), "{err}");
    assert_eq!(reg.blob_gets("rfs/busybox"), 0, "{:#?}", reg.rfs_requests());
    assert_pulled(&e, &oci, &oci, &[]);
}

#[test]
fn pull_one_platform_of_a_multi_arch_index() {
    let Some(images) = images_dir("pull_one_platform_of_a_multi_arch_index") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/multi:latest", reg.host);
    e.seed(
        &format!(
            "oci:{}:latest",
            images.join("busybox-multiarch-oci").display()
        ),
        &image,
        &["--all"],
    );
    let (index, index_digest) = e.raw_manifest(&image, &[]);
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    for (platform, arch, variant) in [
        ("linux/arm64/v8", "arm64", &["--override-arch", "arm64"][..]),
        ("linux/amd64", "amd64", &["--override-arch", "amd64"][..]),
    ] {
        let id = e.ok(&["pull", "-q", "--platform", platform, &image]);
        let (config, digest) = e.config(&image, variant);
        assert_eq!(config["architecture"], arch);
        assert_eq!(id.trim(), digest, "{platform}");
        let info = e.inspect(id.trim());
        assert_eq!(info["Architecture"], arch);
        // RepoDigests names what the tag resolved to: the index.
        assert_eq!(
            strings(&info["RepoDigests"]),
            [format!("{}/rfs/multi@{index_digest}", reg.host)]
        );
        assert_eq!(
            strings(&info["RootFS"]["Layers"]),
            strings(&config["rootfs"]["diff_ids"])
        );
    }
    // The amd64 image is busybox-oci: the same tree.
    let amd64 = e.ok(&["pull", "-q", "--platform", "linux/amd64", &image]);
    assert_same_tree(&e, amd64.trim(), &images.join("busybox-oci"));
    let err = e.fails(&["pull", "-q", "--platform", "linux/s390x", &image]);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );

    // --all-platforms: both images; the name goes to this machine's platform, as a plain
    // pull gives it, the other is kept without a name.
    let plain = e.ok(&["pull", "-q", &image]);
    let e2 = Env::new();
    let named = e2.ok(&["pull", "-q", "--all-platforms", &image]);
    assert_eq!(named, plain);
    let mut ids: Vec<String> = e2
        .ok(&["images", "-q", "--no-trunc"])
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    let mut want: Vec<String> = Vec::new();
    for arch in ["amd64", "arm64"] {
        want.push(e.config(&image, &["--override-arch", arch]).1);
    }
    want.sort();
    assert_eq!(ids, want);
    let rows = e2.ok(&["images"]);
    assert!(
        crate::common::table_rows(&rows)
            .iter()
            .any(|r| r.len() > 2 && r[0] == "<none>"),
        "{rows}"
    );
}

#[test]
fn pull_zstd_layers() {
    let Some(images) = images_dir("pull_zstd_layers") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let source = images.join("busybox-oci-zstd");
    let image = format!("{}/rfs/zstd:latest", reg.host);
    e.seed(&format!("oci:{}:latest", source.display()), &image, &[]);
    let (manifest, _) = e.raw_manifest(&image, &[]);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    e.ok(&["pull", "-q", &image]);
    assert_pulled(&e, &image, &image, &[]);
    assert_same_tree(&e, &image, &source);
}

/// `podman --root … --runroot … --storage-driver vfs ARGS` in the scratch dir: podman's own
/// storage never touches the system's.
fn podman(e: &Env, args: &[&str]) -> Output {
    let root = e.s.mkdir("podman-root");
    let runroot = e.s.mkdir("podman-runroot");
    e.tool("podman")
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(runroot)
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
        .args(["--events-backend", "none"])
        .args(args)
        .output()
        .expect("running podman (scripts/install-deps.sh)")
}

#[test]
fn push_of_a_pulled_image_keeps_its_manifest_digest() {
    let Some(images) = images_dir("push_of_a_pulled_image_keeps_its_manifest_digest") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    let (_, original) = e.raw_manifest(&image, &[]);
    e.ok(&["pull", "-q", &image]);
    let copy = format!("{}/copy/busybox:v1", reg.host);
    let out = e.run(&["push", &image, &copy]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rfs push: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), original);
    let (_, pushed) = e.raw_manifest(&copy, &[]);
    assert_eq!(pushed, original);
    // The blobs came by cross-repository mount, not upload.
    let requests = reg.rfs_requests();
    let mounts = requests
        .iter()
        .filter(|l| l.contains("\"POST /v2/copy/busybox/blobs/uploads/?") && l.contains("mount="))
        .count();
    assert_eq!(mounts, 4, "{requests:#?}");
    assert!(
        !requests.iter().any(|l| l.contains("\"PATCH ")),
        "{requests:#?}"
    );
}

#[test]
fn push_of_a_pulled_image_to_another_registry_recompresses_it() {
    let Some(images) = images_dir("push_of_a_pulled_image_to_another_registry_recompresses_it")
    else {
        return;
    };
    let e = Env::new();
    let a = Registry::start(&e.s.dir.path().join("registry-a"));
    let b = Registry::start(&e.s.dir.path().join("registry-b"));
    let image = format!("{}/rfs/busybox:latest", a.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    let (_, original) = e.raw_manifest(&image, &[]);
    e.ok(&["pull", "-q", &image]);
    // Registry b has none of the blobs and cannot mount them from a: the layers are
    // compressed again, so the manifest is new, and the image the same.
    let dest = format!("{}/rfs/busybox:copy", b.host);
    let out = e.run(&["push", &image, &dest]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("the pulled manifest was kept"), "{err}");
    let (manifest, digest) = e.raw_manifest(&dest, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    assert_ne!(digest, original);
    assert_eq!(manifest["config"]["digest"], e.inspect(&image)["Id"]);
    let (config, _) = e.config(&dest, &[]);
    assert_eq!(
        strings(&config["rootfs"]["diff_ids"]),
        strings(&e.inspect(&image)["RootFS"]["Layers"])
    );
    e.skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:x", e.s.dir.path().join("back").display()),
    ]);
}

#[test]
fn push_of_a_loaded_image_is_read_back_by_skopeo_and_podman() {
    let Some(images) = images_dir("push_of_a_loaded_image_is_read_back_by_skopeo_and_podman")
    else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    e.ok(&[
        "load",
        "-i",
        images
            .join("busybox-docker-archive.tar")
            .to_str()
            .expect("utf-8"),
    ]);
    let info = e.inspect("rfs/busybox");
    let id = info["Id"].as_str().expect("Id").to_owned();
    let diff_ids = strings(&info["RootFS"]["Layers"]);
    for (compression, media) in [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let dest = format!("{}/made/busybox:{compression}", reg.host);
        let digest = e.ok(&[
            "push",
            "-q",
            "--compression",
            compression,
            "rfs/busybox",
            &dest,
        ]);
        let (manifest, manifest_digest) = e.raw_manifest(&dest, &[]);
        assert_eq!(digest.trim(), manifest_digest);
        for layer in manifest["layers"].as_array().expect("layers") {
            assert_eq!(layer["mediaType"], media, "{manifest}");
        }
        // skopeo copies it out (verifying every blob) to a layout whose config is ours.
        let layout = e.s.dir.path().join(format!("copied-{compression}"));
        e.skopeo(&[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
            &format!("oci:{}:x", layout.display()),
        ]);
        let config: serde_json::Value = serde_json::from_slice(&e.skopeo(&[
            "inspect",
            "--config",
            &format!("oci:{}:x", layout.display()),
        ]))
        .expect("config");
        assert_eq!(strings(&config["rootfs"]["diff_ids"]), diff_ids);
        assert_eq!(manifest["config"]["digest"], id.as_str());
    }
    // podman pulls it (gzip) and sees the same image ID.
    let out = podman(
        &e,
        &[
            "pull",
            "-q",
            "--tls-verify=false",
            &format!("docker://{}/made/busybox:gzip", reg.host),
        ],
    );
    assert!(
        out.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim()),
        id
    );

    // Pushed again: the registry has every blob (HEAD), so nothing is uploaded, and gzip
    // gives the same bytes, so the same manifest.
    let dest = format!("{}/made/busybox:gzip", reg.host);
    let (_, first) = e.raw_manifest(&dest, &[]);
    let before = reg.rfs_requests().len();
    let digest = e.ok(&["push", "-q", "rfs/busybox", &dest]);
    assert_eq!(digest.trim(), first);
    let again = &reg.rfs_requests()[before..];
    assert!(
        !again
            .iter()
            .any(|l| l.contains("\"POST ") || l.contains("\"PATCH ")),
        "{again:#?}"
    );
    let heads = again
        .iter()
        .filter(|l| l.contains("\"HEAD /v2/made/busybox/blobs/"))
        .count();
    assert_eq!(heads, diff_ids.len() + 1, "{again:#?}");
}

/// An htpasswd line for `user`, the password given on standard input.
fn htpasswd(user: &str, password: &str) -> String {
    let mut child = Command::new("htpasswd")
        .args(["-iBn", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("htpasswd (apache2-utils: scripts/install-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("writing the password");
    let out = child.wait_with_output().expect("htpasswd");
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `rfs login -u USER --password-stdin HOST` with `password` on standard input.
fn login(e: &Env, host: &str, user: &str, password: &str) -> Output {
    let mut child = e
        .rfs(&["login", "-u", user, "--password-stdin", host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rfs login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("writing the password");
    child.wait_with_output().expect("rfs login")
}

#[test]
fn basic_auth_login_pull_push_logout() {
    let Some(images) = images_dir("basic_auth_login_pull_push_logout") else {
        return;
    };
    let e = Env::new();
    let dir = e.s.dir.path().join("registry");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (user, password) = ("tester", "s3cret-Pa55");
    std::fs::write(dir.join("htpasswd"), htpasswd(user, password)).expect("htpasswd file");
    let reg = Registry::start_with(
        &dir,
        "",
        &format!(
            "auth:\n  htpasswd:\n    realm: rfs-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ),
        false,
    );
    let image = format!("{}/rfs/busybox:latest", reg.host);
    let creds = format!("{user}:{password}");
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &["--dest-creds", &creds],
    );
    let auth_file = e.run.join("containers/auth.json");

    let err = e.fails(&["pull", "-q", &image]);
    assert!(
        err.contains(&format!("rfs login {}", reg.host)),
        "no login hint: {err}"
    );

    let out = login(&e, &reg.host, user, "wrong-password");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "login with a wrong password worked");
    assert!(
        err.contains(&reg.host) && err.contains("refused"),
        "unclear error: {err}"
    );
    assert!(
        !err.contains("wrong-password"),
        "password in the error: {err}"
    );
    assert!(!auth_file.exists(), "a refused login wrote {auth_file:?}");

    let out = login(&e, &reg.host, user, password);
    assert!(
        out.status.success(),
        "rfs login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::metadata(&auth_file).expect("auth.json written");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&auth_file).expect("auth.json");
    assert!(!text.contains(password), "password in clear: {text}");
    // podman's format, read by podman and skopeo.
    let out = e
        .tool("podman")
        .args(["login", "--get-login", "--authfile"])
        .arg(&auth_file)
        .arg(&reg.host)
        .output()
        .expect("podman");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        user,
        "podman login --get-login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        auth_file.to_str().expect("utf-8"),
        &format!("docker://{image}"),
    ]);

    e.ok(&["pull", "-q", &image]);
    assert_pulled(&e, &image, &image, &["--creds", &creds]);
    let pushed = format!("{}/rfs/pushed:1", reg.host);
    let digest = e.ok(&["push", "-q", &image, &pushed]);
    let (_, want) = e.raw_manifest(&pushed, &["--creds", &creds]);
    assert_eq!(digest.trim(), want);

    e.ok(&["logout", &reg.host]);
    let text = std::fs::read_to_string(&auth_file).unwrap_or_default();
    assert!(!text.contains(&reg.host), "logout left {text}");
    let err = e.fails(&["pull", "-q", &image]);
    assert!(err.contains("rfs login"), "{err}");
    let err = e.fails(&["logout", &reg.host]);
    assert!(err.contains("not logged in"), "{err}");

    // logout --all.
    assert!(login(&e, &reg.host, user, password).status.success());
    e.ok(&["logout", "--all"]);
    let text = std::fs::read_to_string(&auth_file).unwrap_or_default();
    assert!(!text.contains(&reg.host), "logout --all left {text}");
}

#[test]
fn login_on_a_terminal_asks_for_the_password_without_echo() {
    let Some(images) = images_dir("login_on_a_terminal_asks_for_the_password_without_echo") else {
        return;
    };
    let e = Env::new();
    let (user, password) = ("tty-user", "Echo-N0t-Shown");
    let reg = basic_auth_registry(&e, &images, user, password);
    // script(1) runs rfs login on a pseudo-terminal; the password is typed only once the
    // prompt is shown, as a person would.
    let command = format!(
        "{} --root {} login -u {user} {}",
        rfs_bin().display(),
        e.root.display(),
        reg.host
    );
    let mut child = e
        .tool("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
                }
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let start = Instant::now();
    loop {
        let seen = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no Password: prompt");
        if seen.contains("Password: ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{seen:?}");
    }
    // Echo is turned off just after the prompt is written.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .expect("typing the password");
    let status = child.wait().expect("script");
    drop(stdin);
    let transcript = reader.join().expect("reader");
    assert!(status.success(), "{transcript:?}");
    assert!(transcript.contains("Login Succeeded"), "{transcript:?}");
    assert!(
        !transcript.contains(password),
        "the password was echoed: {transcript:?}"
    );
    let auth = std::fs::read_to_string(e.run.join("containers/auth.json")).expect("auth.json");
    assert!(auth.contains(&reg.host));
}

#[test]
fn bearer_token_auth_pull_and_push() {
    let Some(images) = images_dir("bearer_token_auth_pull_and_push") else {
        return;
    };
    let e = Env::new();
    let (user, password) = ("tok", "t0ken-Pa55");
    let tokend = TokenServer::start(&e.s.dir.path().join("tokend"), user, password);
    let reg = Registry::start_with(
        &e.s.dir.path().join("registry"),
        "",
        &tokend.auth_config(),
        false,
    );
    let image = format!("{}/rfs/busybox:latest", reg.host);
    let creds = format!("{user}:{password}");
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &["--dest-creds", &creds],
    );
    // Anonymous pull: an anonymous token with pull scope, asked for once and reused for
    // the manifest, the config and the three layers.
    e.ok(&["pull", "-q", &image]);
    let asked = tokend
        .log()
        .lines()
        .filter(|l| *l == "token user=- scope=repository:rfs/busybox:pull")
        .count();
    assert_eq!(asked, 1, "{}", tokend.log());
    assert_pulled(&e, &image, &image, &[]);
    // Anonymous push: the token lacks push.
    let mine = format!("{}/rfs/mine:1", reg.host);
    let err = e.fails(&["push", "-q", &image, &mine]);
    assert!(err.contains("rfs login"), "{err}");

    let out = login(&e, &reg.host, user, "not-it");
    assert!(!out.status.success(), "login with a wrong password worked");
    let out = login(&e, &reg.host, user, password);
    assert!(
        out.status.success(),
        "rfs login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = e.ok(&["push", "-q", &image, &mine]);
    let (_, want) = e.raw_manifest(&mine, &[]);
    assert_eq!(digest.trim(), want);
    assert!(
        tokend.log().contains(&format!(
            "token user={user} scope=repository:rfs/mine:pull,push"
        )),
        "{}",
        tokend.log()
    );

    // An identity token in auth.json (as `docker login` with an OAuth registry stores it):
    // exchanged with a refresh_token grant.
    std::fs::write(
        e.run.join("containers/auth.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"identitytoken\":\"refresh-{password}\"}}}}}}",
            reg.host
        ),
    )
    .expect("auth.json");
    let theirs = format!("{}/rfs/by-token:1", reg.host);
    let digest = e.ok(&["push", "-q", &image, &theirs]);
    let (_, want) = e.raw_manifest(&theirs, &[]);
    assert_eq!(digest.trim(), want);
    assert!(
        tokend.log().contains(&format!(
            "token user={user} grant=refresh_token scope=repository:rfs/by-token:pull,push"
        )),
        "{}",
        tokend.log()
    );
}

#[test]
fn a_missing_tag_is_named() {
    let Some(images) = images_dir("a_missing_tag_is_named") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &format!("{}/rfs/busybox:latest", reg.host),
        &[],
    );
    let err = e.fails(&["pull", &format!("{}/rfs/busybox:nope", reg.host)]);
    assert!(
        err.contains(&reg.host) && err.contains("rfs/busybox:nope"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = e.fails(&["pull", &format!("{}/no/such:latest", reg.host)]);
    assert!(err.contains("no/such:latest"), "{err}");
}

#[test]
fn a_tampered_blob_is_refused_and_not_stored() {
    let Some(images) = images_dir("a_tampered_blob_is_refused_and_not_stored") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    let (manifest, _) = e.raw_manifest(&image, &[]);
    let (config, _) = e.config(&image, &[]);
    let layer = manifest["layers"][0]["digest"].as_str().expect("digest");
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().expect("diff_id");
    // One byte changed in the middle of the big layer; same size.
    let file = reg.blob_file(layer.strip_prefix("sha256:").expect("sha256"));
    let mut bytes = std::fs::read(&file).expect("the layer in the registry's storage");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).expect("tampering");

    let err = e.fails(&["pull", "-q", &image]);
    assert!(err.contains(layer) && err.contains(&reg.host), "{err}");
    let names = e.blob_names();
    assert!(
        !names.iter().any(|n| diff_id.ends_with(n.as_str())),
        "the tampered layer is in the store: {names:?}"
    );
    assert!(
        names.iter().all(|n| n.len() == 64),
        "temporary files left: {names:?}"
    );
    let list = e.ok(&["images", "-q"]);
    assert!(list.trim().is_empty(), "an image was recorded: {list}");
    assert_eq!(e.partial_count(), 0, "the wrong bytes were kept");
}

#[test]
fn a_schema1_manifest_is_refused() {
    let Some(images) = images_dir("a_schema1_manifest_is_refused") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start_with(
        &e.s.dir.path().join("registry"),
        "",
        "compatibility:\n  schema1:\n    enabled: true\n",
        false,
    );
    let image = format!("{}/rfs/old:latest", reg.host);
    e.seed(
        &format!(
            "docker-archive:{}",
            images.join("busybox-docker-archive.tar").display()
        ),
        &image,
        &["--format", "v2s1"],
    );
    let (manifest, _) = e.raw_manifest(&image, &[]);
    assert_eq!(manifest["schemaVersion"], 1);
    let err = e.fails(&["pull", "-q", &image]);
    assert!(
        err.contains("schema 1") && err.contains("not supported"),
        "{err}"
    );
    assert!(e.blob_names().is_empty(), "{:?}", e.blob_names());
}

#[test]
fn an_unreachable_registry_fails_in_bounded_time() {
    let e = Env::new();
    let host = format!("127.0.0.1:{}", free_port());
    let start = Instant::now();
    let err = e.fails(&["pull", "-q", &format!("{host}/rfs/busybox:latest")]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(err.contains(&host), "{err}");
}

#[test]
fn mount_and_run_pull_a_missing_reference_first() {
    let Some(images) = images_dir("mount_and_run_pull_a_missing_reference_first") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let source = images.join("busybox-oci");
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(&format!("oci:{}:latest", source.display()), &image, &[]);
    let manifest_gets = || {
        reg.rfs_requests()
            .iter()
            .filter(|l| l.contains("\"GET /v2/rfs/busybox/manifests/"))
            .count()
    };
    // Not in the store: `rfs mount` pulls it, then mounts it.
    assert_same_tree(&e, &image, &source);
    assert_pulled(&e, &image, &image, &[]);
    assert_eq!(manifest_gets(), 1);
    // In the store now: no registry request.
    let (g, _) = e.mount("again", &image);
    g.unmount().expect("unmount");
    assert_eq!(manifest_gets(), 1);

    // By digest: pulled, then found in the store by its RepoDigests (no second pull).
    let (_, digest) = e.raw_manifest(&image, &[]);
    let pinned = format!("{}/rfs/busybox@{digest}", reg.host);
    let e3 = Env::new();
    let (g, mnt) = e3.mount("pinned", &pinned);
    assert!(mnt.join("bin/busybox").exists());
    g.unmount().expect("unmount");
    let gets = manifest_gets();
    let (g, _) = e3.mount("pinned-again", &pinned);
    g.unmount().expect("unmount");
    assert_eq!(manifest_gets(), gets);
    assert_eq!(
        e3.inspect(&pinned)["Id"],
        e.inspect(&image)["Id"],
        "inspect by digest"
    );

    // `rfs run` of a reference a fresh store lacks.
    let e2 = Env::new();
    let out = e2.run(&["run", "--rm", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rfs run: {err}");
    assert!(err.contains("pulling"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from rfs\nuid=1000(app) gid=1000(app) groups=1000(app)\n/home/app\nFOO=bar\n"
    );
    // A short name is not pulled: the error says how.
    let mnt = e2.s.mkdir("short");
    let err = e2.fails(&["mount", "no-such-image", mnt.to_str().expect("utf-8")]);
    assert!(err.contains("rfs pull no-such-image"), "{err}");
    // A registry that lacks it: the pull's error, and nothing mounted.
    let err = e2.fails(&[
        "mount",
        &format!("{}/rfs/absent:1", reg.host),
        mnt.to_str().expect("utf-8"),
    ]);
    assert!(
        err.contains("rfs/absent:1") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!crate::common::is_mounted(&mnt));
}

#[test]
fn round_trip_pull_run_commit_push_then_podman_runs_it() {
    let Some(images) = images_dir("round_trip_pull_run_commit_push_then_podman_runs_it") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    e.ok(&["pull", "-q", &image]);
    e.ok(&[
        "run",
        "--name",
        "rt",
        &image,
        "echo written-by-rfs-run > /home/app/note",
    ]);
    e.ok(&["commit", "rt", "rfs/roundtrip:1"]);
    let id = e.inspect("rfs/roundtrip:1")["Id"]
        .as_str()
        .expect("Id")
        .to_owned();
    let dest = format!("{}/rt/busybox:1", reg.host);
    let digest = e.ok(&["push", "-q", "rfs/roundtrip:1", &dest]);
    let (_, want) = e.raw_manifest(&dest, &[]);
    assert_eq!(digest.trim(), want);

    let out = podman(&e, &["pull", "-q", "--tls-verify=false", &dest]);
    assert!(
        out.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim()),
        id
    );
    let out = podman(
        &e,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroups=disabled",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &dest,
            "cat /home/app/note",
        ],
    );
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written-by-rfs-run\n");
}

/// What [`FaultProxy`] does to a request that matches a rule (method, and text in the path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Sends the body slowly (16 KiB every 20 ms).
    Throttle,
    /// Sends the headers and this many body bytes, then closes the connection; once.
    CutOnce(usize),
    /// Answers 500 without asking the registry; once.
    Fail500Once,
    /// Answers 400 without asking the registry; once.
    Fail400Once,
}

/// A [`FaultProxy`] rule: `fault` for the `skip + 1`th `method` request whose path contains
/// `part` (every one from there for [`Fault::Throttle`]).
struct Rule {
    method: &'static str,
    part: String,
    skip: usize,
    fault: Fault,
}

/// An HTTP proxy on 127.0.0.1 in front of a [`Registry`] that injects [`Fault`]s and records
/// every request line (with its `Range` header). One request per connection (it asks the
/// registry for `Connection: close`), bodies passed through as bytes. Stopped on drop.
struct FaultProxy {
    host: String,
    rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    fn start(upstream: &str) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let host = listener.local_addr().expect("address").to_string();
        let rules = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s, st, up) = (
            rules.clone(),
            seen.clone(),
            stop.clone(),
            upstream.to_owned(),
        );
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, st, up) = (r.clone(), s.clone(), st.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, &up, &r, &s, &st);
                });
            }
        });
        FaultProxy {
            host,
            rules,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    /// `fault` for `GET`s of a path containing `path_part`.
    fn set(&self, path_part: &str, fault: Fault) {
        self.set_nth("GET", path_part, 0, fault);
    }

    /// `fault` for the `skip + 1`th `method` request of a path containing `path_part`.
    fn set_nth(&self, method: &'static str, path_part: &str, skip: usize, fault: Fault) {
        self.rules.lock().expect("rules").push(Rule {
            method,
            part: path_part.to_owned(),
            skip,
            fault,
        });
    }

    fn clear(&self) {
        self.rules.lock().expect("rules").clear();
    }

    /// The request lines seen so far (`GET /v2/… [Range: …]`).
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }

    /// How many `GET`s of a path containing `part` were seen.
    fn gets(&self, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|l| l.starts_with("GET ") && l.contains(part))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP head (up to the blank line) from `r`.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: &str,
    rules: &std::sync::Mutex<Vec<Rule>>,
    seen: &std::sync::Mutex<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let head = read_head(&mut from_client)?;
    let request = head.first().cloned().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let header = |name: &str| {
        head.iter().skip(1).find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut line = format!("{method} {path}");
    for name in ["range", "content-range"] {
        if let Some(v) = header(name) {
            line.push_str(&format!(" {name}: {v}"));
        }
    }
    seen.lock().expect("seen").push(line);
    let fault = {
        let mut rules = rules.lock().expect("rules");
        let hit = rules
            .iter()
            .position(|r| r.method == method && path.contains(r.part.as_str()));
        hit.and_then(|i| {
            let rule = &mut rules[i];
            if rule.skip > 0 {
                rule.skip -= 1;
                return None;
            }
            let fault = rule.fault;
            if fault != Fault::Throttle {
                rules.remove(i);
            }
            Some(fault)
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    from_client.read_exact(&mut body)?;
    if fault == Some(Fault::Fail500Once) {
        to_client.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if fault == Some(Fault::Fail400Once) {
        to_client.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut out = String::new();
    for line in &head {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut from_up = BufReader::new(up);
    let answer = read_head(&mut from_up)?;
    let mut text = answer.join("\r\n");
    text.push_str("\r\n\r\n");
    to_client.write_all(text.as_bytes())?;
    match fault {
        Some(Fault::CutOnce(n)) => {
            let mut part = vec![0u8; n];
            let got = from_up.read(&mut part)?;
            let mut sent = got;
            to_client.write_all(&part[..got])?;
            while sent < n {
                let got = from_up.read(&mut part[..n - sent])?;
                if got == 0 {
                    break;
                }
                to_client.write_all(&part[..got])?;
                sent += got;
            }
            to_client.shutdown(std::net::Shutdown::Both)?;
        }
        Some(Fault::Throttle) => {
            let mut chunk = vec![0u8; 16 << 10];
            loop {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let got = from_up.read(&mut chunk)?;
                if got == 0 {
                    break;
                }
                to_client.write_all(&chunk[..got])?;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {
            std::io::copy(&mut from_up, &mut to_client)?;
        }
    }
    Ok(())
}

/// Seeds busybox-oci into a new registry behind a proxy; returns them, the image's name
/// through the proxy, and its layers' (digest, diff_id) pairs, the big layer first.
fn proxied_busybox(
    e: &Env,
    images: &Path,
) -> (Registry, FaultProxy, String, Vec<(String, String)>) {
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &format!("{}/rfs/busybox:latest", reg.host),
        &[],
    );
    let direct = format!("{}/rfs/busybox:latest", reg.host);
    let (manifest, _) = e.raw_manifest(&direct, &[]);
    let (config, _) = e.config(&direct, &[]);
    let layers: Vec<(String, String)> = strings(&serde_json::Value::Array(
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].clone())
            .collect(),
    ))
    .into_iter()
    .zip(strings(&config["rootfs"]["diff_ids"]))
    .collect();
    assert!(
        manifest["layers"][0]["size"].as_u64().expect("size") > 1 << 20,
        "the first layer should be the big one: {manifest}"
    );
    let proxy = FaultProxy::start(&reg.host);
    let image = format!("{}/rfs/busybox:latest", proxy.host);
    (reg, proxy, image, layers)
}

#[test]
fn a_connection_cut_mid_blob_resumes_with_range() {
    let Some(images) = images_dir("a_connection_cut_mid_blob_resumes_with_range") else {
        return;
    };
    let e = Env::new();
    let (reg, proxy, image, layers) = proxied_busybox(&e, &images);
    let big = &layers[0].0;
    proxy.set(big, Fault::CutOnce(1 << 20));
    let out = e.run(&["pull", &image]);
    assert!(
        out.status.success(),
        "rfs pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The second request for the big layer asked for the rest only.
    let seen = proxy.seen();
    let big_gets: Vec<&String> = seen.iter().filter(|l| l.contains(big.as_str())).collect();
    assert_eq!(big_gets.len(), 2, "{seen:#?}");
    assert!(
        big_gets[1].ends_with(&format!("range: bytes={}-", 1 << 20)),
        "{seen:#?}"
    );
    // Still verified: the image is the registry's.
    assert_pulled(&e, &image, &image.replace(&proxy.host, &reg.host), &[]);
}

#[test]
fn a_500_answer_is_retried() {
    let Some(images) = images_dir("a_500_answer_is_retried") else {
        return;
    };
    let e = Env::new();
    let (reg, proxy, image, layers) = proxied_busybox(&e, &images);
    proxy.set("/manifests/latest", Fault::Fail500Once);
    proxy.set(&layers[1].0, Fault::Fail500Once);
    e.ok(&["pull", "-q", &image]);
    assert_eq!(proxy.gets("/manifests/latest"), 2, "{:#?}", proxy.seen());
    assert_eq!(proxy.gets(&layers[1].0), 2, "{:#?}", proxy.seen());
    assert_pulled(&e, &image, &image.replace(&proxy.host, &reg.host), &[]);
}

#[test]
fn a_killed_pull_is_completed_by_the_next_without_fetching_finished_layers_again() {
    let Some(images) = images_dir("a_killed_pull_is_completed_by_the_next") else {
        return;
    };
    let e = Env::new();
    let (reg, proxy, image, layers) = proxied_busybox(&e, &images);
    let (big, big_diff) = &layers[0];
    proxy.set(big, Fault::Throttle);
    let mut child = e
        .rfs(&["pull", "-q", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rfs pull");
    // Kill it once the small layers are stored and the big one is on its way.
    let small: Vec<String> = layers[1..]
        .iter()
        .map(|(_, d)| d.trim_start_matches("sha256:").to_owned())
        .collect();
    let start = Instant::now();
    while !(small.iter().all(|d| e.blob_names().contains(d)) && proxy.gets(big) == 1) {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the pull ended before it was killed: {:#?}",
            proxy.seen()
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:#?}",
            proxy.seen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill");
    child.wait().expect("wait");
    let names = e.blob_names();
    assert!(
        !names.contains(&big_diff.trim_start_matches("sha256:").to_owned()),
        "{names:?}"
    );
    assert!(e.ok(&["images", "-q"]).trim().is_empty());
    // What came of the big layer is kept, compressed, for the next pull.
    let partial = e
        .root
        .join("partial")
        .join(big.trim_start_matches("sha256:"));
    let kept = std::fs::metadata(&partial)
        .expect("the partial download is kept")
        .len();
    assert!(kept > 0, "nothing kept");

    proxy.clear();
    let out = e.run(&["pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second pull: {err}");
    assert!(err.contains("1 layers downloaded, 2 already"), "{err}");
    for (digest, _) in &layers[1..] {
        assert_eq!(
            proxy.gets(digest),
            1,
            "{digest} fetched again: {:#?}",
            proxy.seen()
        );
    }
    // The big layer: the rest only, from where the killed pull stopped.
    let seen = proxy.seen();
    let big_gets: Vec<&String> = seen.iter().filter(|l| l.contains(big.as_str())).collect();
    assert_eq!(big_gets.len(), 2, "{seen:#?}");
    assert!(
        big_gets[1].ends_with(&format!("range: bytes={kept}-")),
        "{seen:#?}"
    );
    assert!(!partial.exists(), "the partial download outlived the pull");
    assert_pulled(&e, &image, &image.replace(&proxy.host, &reg.host), &[]);
    // The killed pull's temporary file went with the second pull.
    let names = e.blob_names();
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
}

/// Runs openssl with `args` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.crt`, `ca.key`) and a certificate it signed, `NAME.crt` and
/// `NAME.key`, with `ext` (an openssl extension line: the server's IP SAN, or client use).
fn issue(dir: &Path, name: &str, subject: &str, ext: &str) {
    if !dir.join("ca.crt").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rfs-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
    }
    std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

#[test]
fn tls_with_a_cert_dir_and_without_verification() {
    let Some(images) = images_dir("tls_with_a_cert_dir_and_without_verification") else {
        return;
    };
    let e = Env::new();
    let pki = e.s.mkdir("pki");
    issue(
        &pki,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1",
    );
    // What a user puts in certs.d: the CA only.
    let certs = e.s.mkdir("certs.d");
    std::fs::copy(pki.join("ca.crt"), certs.join("ca.crt")).expect("copy");
    let reg = Registry::start_with(
        &e.s.dir.path().join("registry"),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            pki.join("server.crt").display(),
            pki.join("server.key").display()
        ),
        "",
        true,
    );
    let certs_text = certs.to_str().expect("utf-8");
    let image = format!("{}/rfs/busybox:latest", reg.host);
    let mut args = vec!["copy", "-q", "--dest-cert-dir", certs_text];
    let src = format!("oci:{}:latest", images.join("busybox-oci").display());
    let dest = format!("docker://{image}");
    args.extend([src.as_str(), dest.as_str()]);
    e.skopeo(&args);

    // Loopback may fall back to plain HTTP, but this registry speaks only TLS: the
    // verification error is what the user sees.
    let err = e.fails(&["pull", "-q", &image]);
    assert!(
        err.contains("certificate is not trusted")
            && err.contains("--cert-dir")
            && err.contains(&reg.host),
        "{err}"
    );
    assert_eq!(err.matches("UnknownIssuer").count(), 1, "{err}");
    e.ok(&["pull", "-q", "--cert-dir", certs_text, &image]);
    let info = e.inspect(&image);
    let (_, config_digest) = e.config(&image, &[]);
    assert_eq!(info["Id"], config_digest.as_str());
    let pushed = format!("{}/rfs/pushed:1", reg.host);
    let digest = e.ok(&["push", "-q", "--cert-dir", certs_text, &image, &pushed]);
    let (_, want) = e.raw_manifest(&pushed, &[]);
    assert_eq!(digest.trim(), want);

    let e2 = Env::new();
    e2.ok(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(e2.inspect(&image)["Id"], config_digest.as_str());

    // `insecure = true` in the user's registries.conf does what --tls-verify=false does.
    let e3 = Env::new();
    e3.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        reg.host
    ));
    e3.ok(&["pull", "-q", &image]);
    assert_eq!(e3.inspect(&image)["Id"], config_digest.as_str());

    // The user's certs.d, found by the registry's host:port without any option.
    let e4 = Env::new();
    let dir = e4.home.join(".config/containers/certs.d").join(&reg.host);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(pki.join("ca.crt"), dir.join("ca.crt")).expect("copy");
    e4.ok(&["pull", "-q", &image]);
    assert_eq!(e4.inspect(&image)["Id"], config_digest.as_str());
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let Some(images) = images_dir("mutual_tls_with_a_client_certificate") else {
        return;
    };
    let e = Env::new();
    let pki = e.s.mkdir("pki");
    issue(
        &pki,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1",
    );
    issue(
        &pki,
        "client",
        "/CN=rfs-test-client",
        "extendedKeyUsage=clientAuth",
    );
    let certs = e.s.mkdir("certs.d");
    std::fs::copy(pki.join("ca.crt"), certs.join("ca.crt")).expect("copy");
    let reg = Registry::start_with(
        &e.s.dir.path().join("registry"),
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
            pki.join("server.crt").display(),
            pki.join("server.key").display(),
            pki.join("ca.crt").display()
        ),
        "",
        true,
    );
    let certs_text = certs.to_str().expect("utf-8");
    let image = format!("{}/rfs/busybox:latest", reg.host);
    // Without a client certificate the registry refuses the handshake.
    let err = e.fails(&["pull", "-q", "--cert-dir", certs_text, &image]);
    assert!(
        err.contains(&reg.host) && err.contains("client.cert"),
        "{err}"
    );
    // certs.d's names: client.cert and client.key.
    std::fs::copy(pki.join("client.crt"), certs.join("client.cert")).expect("copy");
    std::fs::copy(pki.join("client.key"), certs.join("client.key")).expect("copy");
    let mut args = vec!["copy", "-q", "--dest-cert-dir", certs_text];
    let src = format!("oci:{}:latest", images.join("busybox-oci").display());
    let dest = format!("docker://{image}");
    args.extend([src.as_str(), dest.as_str()]);
    e.skopeo(&args);
    e.ok(&["pull", "-q", "--cert-dir", certs_text, &image]);
    let (_, config_digest) = e.config(&image, &["--cert-dir", certs_text]);
    assert_eq!(e.inspect(&image)["Id"], config_digest.as_str());
}

#[test]
fn registries_conf_search_registries_and_mirrors() {
    let Some(images) = images_dir("registries_conf_search_registries_and_mirrors") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let src = format!("oci:{}:latest", images.join("busybox-oci").display());
    e.seed(&src, &format!("{}/rfs/busybox:latest", reg.host), &[]);
    e.seed(&src, &format!("{}/mirror/rfs/busybox:v1", reg.host), &[]);
    let dead = format!("127.0.0.1:{}", free_port());
    e.registries_conf(&format!(
        "unqualified-search-registries = [\"{host}\"]\n\
         [[registry]]\nlocation = \"registry.invalid\"\n\
         [[registry.mirror]]\nlocation = \"{dead}\"\n\
         [[registry.mirror]]\nlocation = \"{host}/mirror\"\n",
        host = reg.host
    ));
    let (_, config_digest) = e.config(&format!("{}/rfs/busybox:latest", reg.host), &[]);

    // A short name: from the search registry, named after it.
    let id = e.ok(&["pull", "-q", "rfs/busybox"]);
    assert_eq!(id.trim(), config_digest);
    let name = format!("{}/rfs/busybox:latest", reg.host);
    assert_eq!(strings(&e.inspect(&name)["RepoTags"]), [name]);

    // A registry with mirrors: the dead one is skipped, the second serves it, and the
    // image is named as asked.
    let out = e.run(&["pull", "-q", "registry.invalid/rfs/busybox:v1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&dead), "the dead mirror was not tried: {err}");
    let info = e.inspect("registry.invalid/rfs/busybox:v1");
    assert_eq!(info["Id"], config_digest.as_str());
    assert!(
        reg.rfs_requests()
            .iter()
            .any(|l| l.contains("\"GET /v2/mirror/rfs/busybox/manifests/v1 ")),
        "{:#?}",
        reg.rfs_requests()
    );
}

/// `rfs run` and `rfs mount` of a short name the store lacks: not pulled without
/// `unqualified-search-registries` (a misspelt local name must not reach a registry); with
/// them, pulled from the search registry as `podman run` does, and found in the store under
/// the registry's name the next time, with no request at all.
#[test]
fn a_short_name_is_pulled_through_the_search_registries_by_run_and_mount() {
    let Some(images) = images_dir("a_short_name_is_pulled_through_the_search_registries") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let src = format!("oci:{}:latest", images.join("busybox-oci").display());
    e.seed(&src, &format!("{}/rfs/busybox:latest", reg.host), &[]);
    let manifest_gets = || {
        reg.rfs_requests()
            .iter()
            .filter(|l| l.contains("\"GET /v2/rfs/busybox/manifests/latest "))
            .count()
    };

    let err = e.fails(&["run", "--rm", "rfs/busybox", "echo ran"]);
    assert!(err.contains("rfs/busybox"), "{err}");
    assert_eq!(manifest_gets(), 0, "no search registry: nothing asked");

    e.registries_conf(&format!(
        "unqualified-search-registries = [\"{}\"]\n",
        reg.host
    ));
    assert_eq!(e.ok(&["run", "--rm", "rfs/busybox", "echo ran"]), "ran\n");
    assert_eq!(manifest_gets(), 1, "pulled once");
    let name = format!("{}/rfs/busybox:latest", reg.host);
    assert_eq!(strings(&e.inspect(&name)["RepoTags"]), [name]);
    assert_eq!(
        e.ok(&["run", "--rm", "rfs/busybox", "echo again"]),
        "again\n"
    );
    let (guard, mnt) = e.mount("short", "rfs/busybox");
    assert!(mnt.join("bin/busybox").is_file());
    guard.unmount().expect("unmount");
    assert_eq!(
        manifest_gets(),
        1,
        "found in the store by its registry's name"
    );
}

/// A registry with htpasswd Basic auth for `user:password`, seeded with busybox-oci as
/// `rfs/busybox:latest`.
fn basic_auth_registry(e: &Env, images: &Path, user: &str, password: &str) -> Registry {
    let dir = e.s.dir.path().join("registry");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("htpasswd"), htpasswd(user, password)).expect("htpasswd file");
    let reg = Registry::start_with(
        &dir,
        "",
        &format!(
            "auth:\n  htpasswd:\n    realm: rfs-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ),
        false,
    );
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &format!("{}/rfs/busybox:latest", reg.host),
        &["--dest-creds", &format!("{user}:{password}")],
    );
    reg
}

#[test]
fn credentials_from_registry_auth_file_docker_config_and_a_credential_helper() {
    let Some(images) = images_dir("credentials_from_docker_config_and_helpers") else {
        return;
    };
    let e = Env::new();
    let (user, password) = ("helper-user", "h3lper-Pa55");
    let reg = basic_auth_registry(&e, &images, user, password);
    let image = format!("{}/rfs/busybox:latest", reg.host);
    // base64 of user:password, by coreutils' base64.
    let auth = {
        let mut child = Command::new("base64")
            .args(["-w", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("base64");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{user}:{password}").as_bytes())
            .expect("write");
        String::from_utf8(child.wait_with_output().expect("base64").stdout).expect("utf-8")
    };
    let auths = format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host);

    // $REGISTRY_AUTH_FILE.
    let file = e.s.dir.path().join("elsewhere-auth.json");
    std::fs::write(&file, &auths).expect("auth file");
    let out = e
        .rfs(&["pull", "-q", &image])
        .env("REGISTRY_AUTH_FILE", &file)
        .output()
        .expect("rfs");
    assert!(
        out.status.success(),
        "with REGISTRY_AUTH_FILE: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ~/.docker/config.json auths.
    let docker = e.home.join(".docker");
    std::fs::create_dir_all(&docker).expect("mkdir");
    std::fs::write(docker.join("config.json"), &auths).expect("config.json");
    e.ok(&["pull", "-q", &image]);

    // ~/.docker/config.json credHelpers: docker-credential-rfstest on PATH answers `get`.
    let bin = e.s.mkdir("bin");
    let called = e.s.dir.path().join("helper-called");
    let helper = bin.join("docker-credential-rfstest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" > {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n",
            called.display()
        ),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        docker.join("config.json"),
        format!("{{\"credHelpers\":{{\"{}\":\"rfstest\"}}}}", reg.host),
    )
    .expect("config.json");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = e
        .rfs(&["pull", "-q", &image])
        .env("PATH", &path)
        .output()
        .expect("rfs");
    assert!(
        out.status.success(),
        "with a credential helper: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&called)
            .expect("the helper was not asked")
            .trim(),
        reg.host
    );
    // No credentials at all: refused, so the sources above were what worked.
    std::fs::remove_file(docker.join("config.json")).expect("rm");
    let err = e.fails(&["pull", "-q", &image]);
    assert!(err.contains("rfs login"), "{err}");
}

#[test]
fn pulling_a_present_digest_fetches_only_the_manifest() {
    let Some(images) = images_dir("pulling_a_present_digest_fetches_only_the_manifest") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    let (_, digest) = e.raw_manifest(&image, &[]);
    e.ok(&["pull", "-q", &image]);
    let before = reg.rfs_requests().len();
    let pinned = format!("{}/rfs/busybox@{digest}", reg.host);
    let id = e.ok(&["pull", "-q", &pinned]);
    assert_eq!(id.trim(), e.inspect(&image)["Id"].as_str().expect("Id"));
    let requests: Vec<String> = reg.rfs_requests()[before..]
        .iter()
        .map(|l| {
            l.split('"')
                .nth(1)
                .expect("request line")
                .rsplit_once(' ')
                .expect("method path version")
                .0
                .to_owned()
        })
        .collect();
    assert_eq!(
        requests,
        [
            "GET /v2/".to_owned(),
            format!("GET /v2/rfs/busybox/manifests/{digest}")
        ]
    );
    // The pulled image's history is the config's.
    let (config, _) = e.config(&image, &[]);
    let history = e.ok(&["history", "--no-trunc", &image]);
    let entries = config["history"].as_array().expect("history");
    assert_eq!(history.lines().count(), entries.len() + 1, "{history}");
    for entry in entries {
        if let Some(created_by) = entry["created_by"].as_str() {
            assert!(
                history.contains(created_by),
                "{created_by} missing:\n{history}"
            );
        }
    }
}

#[test]
fn a_full_disk_during_a_pull_leaves_a_valid_store() {
    let Some(images) = images_dir("a_full_disk_during_a_pull_leaves_a_valid_store") else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let image = format!("{}/rfs/busybox:latest", reg.host);
    e.seed(
        &format!("oci:{}:latest", images.join("busybox-oci").display()),
        &image,
        &[],
    );
    // The store on a 3 MiB tmpfs; the big layer is 7 MB uncompressed.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&e.root)
        .status()
        .expect("mount");
    assert!(st.success(), "mounting a tmpfs on {}", e.root.display());
    let guard = MountGuard::kernel_guard(&e.root);
    let err = e.fails(&["pull", "-q", &image]);
    assert!(
        err.contains("No space left on device") && err.contains(e.root.to_str().expect("utf-8")),
        "{err}"
    );
    // Still a store: it lists, holds no image and no half-written file.
    assert!(e.ok(&["images", "-q"]).trim().is_empty());
    let names = e.blob_names();
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
    let (config, _) = e.config(&image, &[]);
    let big = config["rootfs"]["diff_ids"][0]
        .as_str()
        .expect("diff_id")
        .trim_start_matches("sha256:")
        .to_owned();
    assert!(!names.contains(&big), "{names:?}");
    assert_eq!(
        e.partial_count(),
        0,
        "a partial download was kept on a full disk"
    );
    guard.unmount().expect("unmount the tmpfs");
}

#[test]
fn pull_progress_is_a_line_per_layer_or_bars_on_a_terminal() {
    let Some(images) = images_dir("pull_progress_is_a_line_per_layer_or_bars_on_a_terminal") else {
        return;
    };
    let e = Env::new();
    let (_reg, proxy, image, layers) = proxied_busybox(&e, &images);
    let short: Vec<String> = layers
        .iter()
        .map(|(d, _)| format!("layer {}", &d.trim_start_matches("sha256:")[..12]))
        .collect();

    // Not a terminal: one line per layer when it is done.
    let out = e.run(&["pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut done: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("layer "))
        .map(|l| l.split(':').next().expect("name"))
        .collect();
    done.sort_unstable();
    let mut want: Vec<&str> = short.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(done, want, "{err}");
    assert!(
        !err.contains('\x1b'),
        "escape codes off a terminal: {err:?}"
    );

    // On a terminal (script(1) gives it one): bars redrawn in place while the big layer
    // trickles in.
    let e2 = Env::new();
    proxy.set(&layers[0].0, Fault::Throttle);
    let command = format!(
        "{} --root {} pull {image}",
        rfs_bin().display(),
        e2.root.display()
    );
    let out = e2
        .tool("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\x1b[K"), "no redrawn lines: {text:?}");
    assert!(text.contains(" / 5.1 MiB"), "no partial bar: {text:?}");
    for name in &short {
        assert!(text.contains(&format!("{name}: done")), "{name}: {text:?}");
    }
}

#[test]
fn a_push_uploads_in_chunks_and_continues_after_a_failed_chunk() {
    let Some(images) = images_dir("a_push_uploads_in_chunks_and_continues_after_a_failed_chunk")
    else {
        return;
    };
    let e = Env::new();
    let reg = Registry::start(&e.s.dir.path().join("registry"));
    let proxy = FaultProxy::start(&reg.host);
    e.ok(&[
        "load",
        "-i",
        images.join("debian-oci.tar").to_str().expect("utf-8"),
    ]);
    let info = e.inspect("localhost/debian-oci:bookworm");
    let diff_ids = strings(&info["RootFS"]["Layers"]);
    // The layer (uncompressed, > 100 MB) goes up in 16 MiB chunks. The proxy answers the
    // third with a 500 without passing it on: rfs asks the registry where the upload
    // stands (a GET of the upload) and sends the third chunk again.
    proxy.set_nth(
        "PATCH",
        "/v2/big/debian/blobs/uploads/",
        2,
        Fault::Fail500Once,
    );
    let dest = format!("{}/big/debian:1", proxy.host);
    let digest = e.ok(&[
        "push",
        "-q",
        "--compression",
        "none",
        "localhost/debian-oci:bookworm",
        &dest,
    ]);
    let seen = proxy.seen();
    let patches: Vec<&String> = seen.iter().filter(|l| l.starts_with("PATCH ")).collect();
    let size = std::fs::metadata(
        e.root
            .join("blobs/sha256")
            .join(diff_ids[0].trim_start_matches("sha256:")),
    )
    .expect("the layer")
    .len();
    let chunks = size.div_ceil(16 << 20) as usize;
    assert!(chunks > 3, "{size}");
    // Every chunk once, the failed one twice.
    assert_eq!(patches.len(), chunks + 1, "{patches:#?}");
    assert!(
        patches[0].ends_with(&format!("content-range: 0-{}", (16 << 20) - 1)),
        "{patches:#?}"
    );
    assert_eq!(patches[2], patches[3], "{patches:#?}");
    let status_gets = seen
        .iter()
        .filter(|l| l.starts_with("GET /v2/big/debian/blobs/uploads/"))
        .count();
    assert_eq!(status_gets, 1, "{seen:#?}");
    // The registry has the image; skopeo reads it back with its diff_ids.
    let direct = format!("{}/big/debian:1", reg.host);
    let (manifest, want) = e.raw_manifest(&direct, &[]);
    assert_eq!(digest.trim(), want);
    assert_eq!(manifest["layers"][0]["size"].as_u64(), Some(size));
    let (config, _) = e.config(&direct, &[]);
    assert_eq!(strings(&config["rootfs"]["diff_ids"]), diff_ids);
    e.skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{direct}"),
        &format!("oci:{}:x", e.s.dir.path().join("back").display()),
    ]);

    // A registry that refuses a chunk (400) gets the blob in one PATCH.
    proxy.set_nth(
        "PATCH",
        "/v2/whole/debian/blobs/uploads/",
        0,
        Fault::Fail400Once,
    );
    let before = proxy.seen().len();
    let dest = format!("{}/whole/debian:1", proxy.host);
    e.ok(&[
        "push",
        "-q",
        "--compression",
        "none",
        "localhost/debian-oci:bookworm",
        &dest,
    ]);
    let seen = proxy.seen()[before..].to_vec();
    let patches: Vec<&String> = seen.iter().filter(|l| l.starts_with("PATCH ")).collect();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert!(patches[0].contains("content-range: 0-"), "{patches:#?}");
    assert!(!patches[1].contains("content-range"), "{patches:#?}");
    let (config, _) = e.config(&format!("{}/whole/debian:1", reg.host), &[]);
    assert_eq!(strings(&config["rootfs"]["diff_ids"]), diff_ids);
}

#[test]
fn two_pulls_of_one_image_at_once_both_succeed() {
    let Some(images) = images_dir("two_pulls_of_one_image_at_once_both_succeed") else {
        return;
    };
    let e = Env::new();
    let (reg, proxy, image, layers) = proxied_busybox(&e, &images);
    // The big layer trickles in, so the two pulls overlap.
    proxy.set(&layers[0].0, Fault::Throttle);
    let spawn = || {
        e.rfs(&["pull", "-q", &image])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rfs pull")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("wait"),
        b.wait_with_output().expect("wait"),
    );
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(proxy.gets(&layers[0].0), 2, "{:#?}", proxy.seen());
    assert_pulled(&e, &image, &image.replace(&proxy.host, &reg.host), &[]);
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);
    let names = e.blob_names();
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
}

#[test]
fn a_wrong_partial_download_is_fetched_again_whole() {
    let Some(images) = images_dir("a_wrong_partial_download_is_fetched_again_whole") else {
        return;
    };
    let e = Env::new();
    let (reg, proxy, image, layers) = proxied_busybox(&e, &images);
    let big = layers[0].0.trim_start_matches("sha256:").to_owned();
    // As if a killed pull had kept 1 MiB of the big layer, but the bytes are wrong.
    let dir = e.root.join("partial");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(&big), vec![0x1f; 1 << 20]).expect("partial");
    e.ok(&["pull", "-q", &image]);
    let seen = proxy.seen();
    let big_gets: Vec<&String> = seen.iter().filter(|l| l.contains(big.as_str())).collect();
    assert_eq!(big_gets.len(), 2, "{seen:#?}");
    assert!(
        big_gets[0].ends_with(&format!("range: bytes={}-", 1 << 20)),
        "{seen:#?}"
    );
    assert!(!big_gets[1].contains("range:"), "{seen:#?}");
    assert_pulled(&e, &image, &image.replace(&proxy.host, &reg.host), &[]);
    assert!(!dir.join(&big).exists());
    // rfs prune removes what an abandoned pull kept.
    std::fs::write(dir.join(&big), b"abandoned").expect("partial");
    e.ok(&["prune"]);
    assert!(!dir.join(&big).exists(), "prune left the partial download");
}

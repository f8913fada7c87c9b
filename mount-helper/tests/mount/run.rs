//! `rfs run`, `rfs ps` and `rfs rm` through the real binary with the busybox and Debian test
//! images: exit codes, the image config (Env, WorkingDir, User), writes landing in the
//! container's own upper, two containers at once, `--rm`, volumes, `--net none`, signals,
//! `-t`, and the ways out of a container that must stay shut. As root, and as the
//! unprivileged user `rfstest` (with a subuid range) and `nobody` (without one).
//!
//! Every test gets its own root directory, and a guard that `rfs rm -f`s whatever it left:
//! the union of a container lives in the container's private mount namespace, so killing the
//! container's processes is what unmounts it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{Scratch, rfs_bin};

/// Who runs `rfs`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Root,
    /// `rfstest`, with a range in /etc/subuid and /etc/subgid.
    RangedUser,
    /// `nobody`, without a range: a single id mapping.
    SingleIdUser,
}

/// A copy of the binary and the busybox image that unprivileged users can read, in one
/// fixed directory reused by later runs (the binary is copied afresh each run).
struct Shared {
    dir: PathBuf,
    bin: PathBuf,
    busybox: PathBuf,
}

fn shared(images: &Path) -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = std::env::temp_dir().join("rfs-run-tests");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let bin = dir.join("rfs");
        let fresh = dir.join(format!("rfs.{}", std::process::id()));
        crate::common::copy_of_rfs(&fresh);
        std::fs::rename(&fresh, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let busybox = dir.join("busybox-oci");
        let _ = std::fs::remove_dir_all(&busybox);
        let st = Command::new("cp")
            .arg("-r")
            .arg(images.join("busybox-oci"))
            .arg(&busybox)
            .status()
            .unwrap();
        assert!(st.success());
        let st = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(&busybox)
            .status()
            .unwrap();
        assert!(st.success());
        ensure_user("rfstest");
        ensure_subid_range("rfstest");
        Shared { dir, bin, busybox }
    })
}

/// Creates the unprivileged user `user` (no home, no login shell) if it does not exist.
pub(crate) fn ensure_user(user: &str) {
    let exists = Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let st = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", user])
            .status()
            .expect("running useradd");
        assert!(st.success(), "useradd {user} failed");
    }
}

/// Gives `user` the range 100000:65536 in /etc/subuid and /etc/subgid if it has none.
pub(crate) fn ensure_subid_range(user: &str) {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.lines().any(|l| l.starts_with(&format!("{user}:"))) {
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{user}:100000:65536\n"));
            std::fs::write(file, text).unwrap();
        }
    }
}

/// One test's rfs root directory and caller; removes every container left on drop.
struct Env {
    who: Who,
    root: PathBuf,
    bin: PathBuf,
    busybox: PathBuf,
    _scratch: Option<Scratch>,
}

impl Env {
    fn new(who: Who, images: &Path) -> Env {
        let sh = shared(images);
        match who {
            Who::Root => {
                let scratch = Scratch::new();
                Env {
                    who,
                    root: scratch.mkdir("root"),
                    bin: rfs_bin(),
                    busybox: images.join("busybox-oci"),
                    _scratch: Some(scratch),
                }
            }
            _ => {
                let root = sh.dir.join(format!(
                    "root-{:?}-{}",
                    who,
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                ));
                Env {
                    who,
                    root,
                    bin: sh.bin.clone(),
                    busybox: sh.busybox.clone(),
                    _scratch: None,
                }
            }
        }
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut c = match self.who {
            Who::Root => Command::new(&self.bin),
            Who::RangedUser | Who::SingleIdUser => {
                let user = if self.who == Who::RangedUser {
                    "rfstest"
                } else {
                    "nobody"
                };
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&self.bin);
                c
            }
        };
        c.env("RFS_ROOT", &self.root).args(args).current_dir("/");
        c
    }

    /// Starts `rfs ARGS...` with stdout piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting rfs")
    }

    fn rfs(&self, args: &[&str]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.command(&args)
            .stdin(Stdio::null())
            .output()
            .expect("running rfs")
    }

    /// `rfs run [flags] busybox-oci CMD...`
    fn run_busybox(&self, flags: &[&str], cmd: &[&str]) -> Output {
        let bb = self.busybox.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["run"];
        args.extend_from_slice(flags);
        args.push(&bb);
        args.extend_from_slice(cmd);
        self.rfs(&args)
    }

    /// The directory of the container named `name`.
    fn container_dir(&self, name: &str) -> PathBuf {
        for e in std::fs::read_dir(self.root.join("containers")).unwrap() {
            let dir = e.unwrap().path();
            let state = std::fs::read_to_string(dir.join("state.json")).unwrap_or_default();
            if state.contains(&format!("\"name\": \"{name}\"")) {
                return dir;
            }
        }
        panic!("no container {name} in {}", self.root.display());
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let out = self.rfs(&["ps", "-a"]);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.rfs(&args);
        }
        if self.who != Who::Root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup(test: &str, who: Who) -> Option<Env> {
    let images = crate::common::images_dir(test)?;
    Some(Env::new(who, &images))
}

/// The image's default command prints what docker printed for the same image
/// (`docker/run-busybox.txt`): Entrypoint + Cmd, User app, WorkingDir, Env.
fn default_command_matches_docker(env: &Env) {
    let out = env.run_busybox(&[], &[]);
    assert_code(&out, 0);
    assert_eq!(
        text(&out),
        "hello from rfs\nuid=1000(app) gid=1000(app) groups=1000(app)\n/home/app\nFOO=bar\n"
    );
}

fn exit_codes(env: &Env) {
    assert_code(&env.run_busybox(&[], &["exit 3"]), 3);
    assert_code(&env.run_busybox(&[], &["kill -9 $$"]), 137);
    let missing = env.run_busybox(&["--entrypoint", "/no/such/program"], &[]);
    assert_code(&missing, 127);
}

/// User app owns its home; what it writes lands in this container's upper, owned as app
/// inside, and nowhere else.
fn writes_land_in_the_upper(env: &Env) {
    let out = env.run_busybox(
        &["--name", "writer"],
        &["stat -c %u:%g /home/app /home/app/file; echo note > /home/app/note; stat -c %u:%g /home/app/note"],
    );
    assert_code(&out, 0);
    assert_eq!(text(&out), "1000:1000\n1000:1000\n1000:1000\n");
    let upper = env.container_dir("writer").join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("home/app/note")).unwrap(),
        "note\n"
    );
    let again = env.run_busybox(&[], &["cat /home/app/note 2>&1 || echo absent"]);
    assert!(text(&again).contains("absent"), "{}", text(&again));
}

/// A flat busybox export without `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, which
/// unprivileged users can read: an image that lacks the files rfs binds over.
fn busybox_without_etc_files(images: &Path) -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = &shared(images).dir;
        let path = dir.join("busybox-without-etc-files.tar");
        if !path.exists() {
            let s = Scratch::new();
            let rootfs = s.mkdir("rootfs");
            crate::common::unpack_busybox_export(images, &rootfs);
            for f in ["hosts", "hostname", "resolv.conf"] {
                std::fs::remove_file(rootfs.join("etc").join(f)).unwrap();
            }
            // Made under a name of its own, then renamed: another run of the tests may race here.
            let fresh = dir.join(format!("busybox-without-etc-files.{}", std::process::id()));
            let st = Command::new("tar")
                .arg("-cf")
                .arg(&fresh)
                .arg("-C")
                .arg(&rootfs)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::rename(&fresh, &path).unwrap();
        }
        path
    })
}

/// The member names of the top layer of `image`, in the store of `env`, without a trailing
/// `/`, as `tar` lists them.
fn top_layer_members(env: &Env, image: &str) -> Vec<String> {
    let out = env.rfs(&["inspect", image]);
    assert_code(&out, 0);
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = inspect[0]["RootFS"]["Layers"].as_array().unwrap();
    let top = layers.last().unwrap().as_str().unwrap();
    let blob = env
        .root
        .join("blobs/sha256")
        .join(top.strip_prefix("sha256:").unwrap());
    let out = Command::new("tar").arg("-tf").arg(&blob).output().unwrap();
    assert!(out.status.success(), "tar -tf {}", blob.display());
    let mut names: Vec<String> = text(&out)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    names.sort();
    names
}

/// Issue 13: the mountpoints rfs makes for a container (`/etc/hosts`, `/etc/hostname`,
/// `/etc/resolv.conf`, a volume's target and its parent) are not the container's changes,
/// also where the image lacks them: `rfs diff` lists what the command changed and nothing
/// else, and the layer of `rfs commit` holds only that.
fn mountpoints_are_not_the_containers_changes(env: &Env, images: &Path) {
    let image = busybox_without_etc_files(images);
    let import = env.rfs(&[
        "import",
        image.to_str().unwrap(),
        "bare:1",
        "-c",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
    ]);
    assert_code(&import, 0);
    // The volume's source only needs to be readable by every caller.
    let volume = format!("{}:/data/vol:ro", shared(images).dir.display());
    let out = env.rfs(&[
        "run",
        "--name",
        "changer",
        "-v",
        &volume,
        "bare:1",
        "echo extra >> /etc/passwd; echo hi > /tmp/own; grep -c localhost /etc/hosts; \
         cat /etc/hostname >/dev/null; test -f /etc/resolv.conf; test -d /data/vol && echo vol",
    ]);
    assert_code(&out, 0);
    assert_eq!(text(&out), "2\nvol\n");
    let diff = env.rfs(&["diff", "changer"]);
    assert_code(&diff, 0);
    assert_eq!(text(&diff), "C /etc/passwd\nC /tmp\nA /tmp/own\n");

    assert_code(&env.rfs(&["commit", "changer", "bare:committed"]), 0);
    assert_eq!(
        top_layer_members(env, "bare:committed"),
        ["etc", "etc/passwd", "tmp", "tmp/own"]
    );
    let committed = env.rfs(&[
        "run",
        "--rm",
        "bare:committed",
        "tail -n 1 /etc/passwd; cat /tmp/own; test -e /data || echo no-data",
    ]);
    assert_code(&committed, 0);
    assert_eq!(text(&committed), "extra\nhi\nno-data\n");
}

#[test]
fn run_as_root_keeps_mountpoints_out_of_diff_and_commit() {
    let test = "run_as_root_keeps_mountpoints_out_of_diff_and_commit";
    let Some(env) = setup(test, Who::Root) else {
        return;
    };
    mountpoints_are_not_the_containers_changes(&env, &crate::common::images_dir(test).unwrap());
}

#[test]
fn run_rootless_keeps_mountpoints_out_of_diff_and_commit() {
    let test = "run_rootless_keeps_mountpoints_out_of_diff_and_commit";
    let Some(env) = setup(test, Who::RangedUser) else {
        return;
    };
    mountpoints_are_not_the_containers_changes(&env, &crate::common::images_dir(test).unwrap());
}

/// Issue 13: pid 1 of the container shows the container's command, as docker's does, and
/// no host path: not in its arguments, its name or its environment.
fn pid_1_is_the_containers_command(env: &Env) {
    let script = "tr '\\0' '|' < /proc/1/cmdline; echo; cat /proc/1/comm; \
                  tr '\\0' '\\n' < /proc/1/environ";
    let out = env.run_busybox(&["-u", "root"], &[script]);
    assert_code(&out, 0);
    let t = text(&out);
    let mut lines = t.lines();
    assert_eq!(
        lines.next(),
        Some(format!("/bin/sh|-c|{script}|").as_str()),
        "{t}"
    );
    assert_eq!(lines.next(), Some("sh"), "{t}");
    let root = env.root.to_string_lossy().into_owned();
    for var in lines {
        assert!(
            !var.contains(&root),
            "host path in pid 1's environment: {var}"
        );
    }
    assert!(t.contains("\nFOO=bar\n"), "the image's environment: {t}");
}

#[test]
fn run_as_root_honours_the_image_config() {
    let Some(env) = setup("run_as_root_honours_the_image_config", Who::Root) else {
        return;
    };
    default_command_matches_docker(&env);
    exit_codes(&env);
    pid_1_is_the_containers_command(&env);
    let out = env.run_busybox(
        &[
            "-u",
            "root",
            "-w",
            "/tmp",
            "-e",
            "FOO=baz",
            "-e",
            "NEW=1",
            "--hostname",
            "box",
        ],
        &["id -u; pwd; echo $FOO $NEW $PATH; hostname; cat /etc/hostname"],
    );
    assert_code(&out, 0);
    assert_eq!(
        text(&out),
        "0\n/tmp\nbaz 1 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nbox\nbox\n"
    );
    let ids = env.run_busybox(&["-u", "app:root"], &["id -u; id -g"]);
    assert_eq!(text(&ids), "1000\n0\n");
    let unknown = env.run_busybox(&["-u", "nosuchuser"], &["true"]);
    assert_code(&unknown, 125);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuchuser"));
}

#[test]
fn run_as_root_writes_land_in_the_containers_upper() {
    let Some(env) = setup("run_as_root_writes_land_in_the_containers_upper", Who::Root) else {
        return;
    };
    writes_land_in_the_upper(&env);
    let upper = env.container_dir("writer").join("upper");
    let m = std::fs::metadata(upper.join("home/app/note")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (1000, 1000),
        "root maps ids to themselves"
    );
}

/// rfs builds a container's union before the container's user namespace exists, as root
/// who could write `trusted.*` xattrs, but serves it from inside, where `trusted.*` can be
/// neither set nor read: the upper's markers (an opaque directory, a copied-up file's
/// origin) are in `user.*`, and the container sees its own changes through them.
#[test]
fn run_as_root_keeps_the_uppers_markers_in_user_xattrs() {
    let test = "run_as_root_keeps_the_uppers_markers_in_user_xattrs";
    let Some(env) = setup(test, Who::Root) else {
        return;
    };
    let out = env.run_busybox(
        &["--name", "marks", "--user", "root"],
        &[
            "rm -r /home/app && mkdir /home/app && touch /home/app/new && chmod 600 /etc/passwd \
           && ls -a /home/app && stat -c %a /etc/passwd",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(text(&out), ".\n..\nnew\n600\n");
    let upper = env.container_dir("marks").join("upper");
    let names = |rel: &str| crate::differential::xattr::list(&upper.join(rel)).unwrap();
    let (dir, file) = (names("home/app"), names("etc/passwd"));
    assert!(
        dir.iter().any(|n| n == "user.overlay.opaque"),
        "home/app: {dir:?}"
    );
    assert!(
        file.iter().any(|n| n == "user.rfs.origin"),
        "etc/passwd: {file:?}"
    );
    assert!(
        !dir.iter().chain(&file).any(|n| n.starts_with("trusted.")),
        "no trusted.* markers: {dir:?} {file:?}"
    );
}

#[test]
fn run_rootless_with_a_subuid_range() {
    let Some(env) = setup("run_rootless_with_a_subuid_range", Who::RangedUser) else {
        return;
    };
    default_command_matches_docker(&env);
    exit_codes(&env);
    pid_1_is_the_containers_command(&env);
    writes_land_in_the_upper(&env);
    let map = env.run_busybox(&["-u", "root"], &["cat /proc/self/uid_map"]);
    let fields: Vec<Vec<String>> = text(&map)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(fields.len(), 2, "{}", text(&map));
    assert_eq!(fields[0][0], "0");
    assert_eq!(fields[1][2], "65536");
}

#[test]
fn run_rootless_without_a_range_runs_as_root_with_a_notice() {
    let Some(env) = setup(
        "run_rootless_without_a_range_runs_as_root_with_a_notice",
        Who::SingleIdUser,
    ) else {
        return;
    };
    // Files of unmapped owners (app's home) are not writable for the namespace's root until
    // rfs-fs can report them as owned by root; /tmp is world-writable.
    let out = env.run_busybox(&[], &["id -u; echo hi > /tmp/x && cat /tmp/x"]);
    assert_code(&out, 0);
    assert_eq!(text(&out), "0\nhi\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only root is mapped"), "{err}");
    assert!(err.contains("uid 1000"), "{err}");
}

#[test]
fn run_two_containers_at_once_see_only_their_own_changes() {
    let Some(env) = setup(
        "run_two_containers_at_once_see_only_their_own_changes",
        Who::Root,
    ) else {
        return;
    };
    let bb = env.busybox.to_string_lossy().into_owned();
    let start = |name: &str| {
        let script = format!("echo {name} > /tmp/{name}; sleep 1; ls /tmp");
        env.spawn(&["run", "--name", name, &bb, &script])
    };
    let (a, b) = (start("one"), start("two"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_code(&a, 0);
    assert_code(&b, 0);
    assert_eq!(text(&a), "one\n");
    assert_eq!(text(&b), "two\n");
    let ps = text(&env.rfs(&["ps", "-a"]));
    assert!(
        ps.contains("one") && ps.contains("two") && ps.contains("Exited (0)"),
        "{ps}"
    );
}

#[test]
fn run_rm_ps_and_rm() {
    let Some(env) = setup("run_rm_ps_and_rm", Who::Root) else {
        return;
    };
    assert_code(&env.run_busybox(&["--rm", "--name", "gone"], &["true"]), 0);
    assert!(!text(&env.rfs(&["ps", "-a"])).contains("gone"));
    assert_code(&env.run_busybox(&["--name", "kept"], &["exit 4"]), 4);
    let ps = text(&env.rfs(&["ps", "-a"]));
    let header = ps.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "COMMAND",
        "STATUS",
        "CREATED",
    ] {
        assert!(header.contains(col), "{ps}");
    }
    assert!(ps.contains("kept") && ps.contains("Exited (4)"), "{ps}");
    let json = text(&env.rfs(&["ps", "-a", "--format", "json"]));
    let kept: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .filter(|v: &serde_json::Value| v["Names"] == "kept")
        .collect();
    assert_eq!(kept.len(), 1, "{json}");
    assert_eq!(kept[0]["State"], "exited");
    assert!(
        kept[0]["Status"]
            .as_str()
            .unwrap()
            .starts_with("Exited (4)")
    );
    assert!(
        !text(&env.rfs(&["ps"])).contains("kept"),
        "ps lists running ones only"
    );
    let dir = env.container_dir("kept");
    assert_code(&env.rfs(&["rm", "kept"]), 0);
    assert!(!dir.exists());
    assert_code(&env.rfs(&["rm", "kept"]), 1);

    // A running container: refused without -f, killed with it.
    let bb = env.busybox.to_string_lossy().into_owned();
    let mut child = env.spawn(&["run", "--name", "busy", &bb, "sleep 60"]);
    let t = Instant::now();
    while !text(&env.rfs(&["ps"])).contains("busy") {
        assert!(t.elapsed() < Duration::from_secs(20), "container never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_code(&env.rfs(&["rm", "busy"]), 1);
    assert_code(&env.rfs(&["rm", "-f", "busy"]), 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(!text(&env.rfs(&["ps", "-a"])).contains("busy"));
}

#[test]
fn run_volumes_bind_host_directories() {
    let Some(env) = setup("run_volumes_bind_host_directories", Who::Root) else {
        return;
    };
    let s = Scratch::new();
    let vol = s.mkdir("vol");
    std::fs::write(vol.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", vol.display());
    let ro = format!("{}:/ro:ro", vol.display());
    let out = env.run_busybox(
        &["-u", "root", "-v", &rw, "-v", &ro],
        &["cat /data/in; echo back > /data/out; touch /ro/x 2>/dev/null || echo read-only"],
    );
    assert_code(&out, 0);
    assert_eq!(text(&out), "from host\nread-only\n");
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "back\n");
}

#[test]
fn run_net_none_has_only_loopback() {
    let Some(env) = setup("run_net_none_has_only_loopback", Who::Root) else {
        return;
    };
    let out = env.run_busybox(
        &["--net", "none"],
        &["ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"],
    );
    assert_code(&out, 0);
    let t = text(&out);
    let mut lines = t.lines();
    assert_eq!(lines.next(), Some("lo"), "{t}");
    lines.next();
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up: {t}");
}

#[test]
fn run_sigterm_reaches_the_command() {
    let Some(env) = setup("run_sigterm_reaches_the_command", Who::Root) else {
        return;
    };
    let bb = env.busybox.to_string_lossy().into_owned();
    let script = "trap 'echo got TERM; exit 7' TERM; echo started; while true; do sleep 0.1; done";
    let mut child = env.spawn(&["run", &bb, script]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got TERM\n");
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn run_tty_gives_a_terminal() {
    let Some(env) = setup("run_tty_gives_a_terminal", Who::Root) else {
        return;
    };
    let out = env.run_busybox(&["-t"], &["test -t 0 && test -t 1 && echo terminal; tty"]);
    assert_code(&out, 0);
    let t = text(&out);
    assert!(t.starts_with("terminal\r\n/dev/"), "{t:?}");
}

/// The ways out: `cd /..`, `/proc/1/root`, a symlink to a host path, the chroot escape (in
/// the Debian image, which has perl); fds beyond stdio; no_new_privs; a writable
/// `/proc/sys`.
fn escapes_stay_inside(env: &Env, debian: &Path) {
    // /work exists on the host's root and in neither image.
    let out = env.run_busybox(
        &["-u", "root"],
        &[
            "cd /..; ls; ls /proc/1/root/ | grep -c work; ln -s /work /tmp/l; ls /tmp/l/ 2>&1 >/dev/null | grep -c 'No such'; \
             grep -c ' /proc/sys proc ro,' /proc/mounts; grep NoNewPrivs /proc/self/status; ls /proc/self/fd",
        ],
    );
    assert_code(&out, 0);
    let t = text(&out);
    let expected_root = "bin\ndev\netc\nhome\nopt\nproc\nroot\nrun\nsys\ntmp\n";
    assert!(t.starts_with(expected_root), "{t}");
    assert!(t.ends_with("0\n1\n1\nNoNewPrivs:\t1\n0\n1\n2\n3\n"), "{t}");
    let deb = debian.to_string_lossy().into_owned();
    let escape = env.rfs(&[
        "run",
        "-u",
        "root",
        &deb,
        "perl",
        "-e",
        r#"mkdir "/x"; chroot "/x" or die "chroot: $!"; chdir ".." for 1..64; chroot "." or die "chroot .: $!"; opendir D, "/" or die; print join(" ", sort grep { !/^\./ } readdir D), "\n";"#,
    ]);
    assert_code(&escape, 0);
    let listing = text(&escape);
    assert!(
        listing.contains("usr") && listing.contains("x"),
        "{listing}"
    );
    assert!(
        !listing.split_whitespace().any(|n| n == "work"),
        "escaped to the host: {listing}"
    );
}

#[test]
fn run_as_root_cannot_reach_the_host() {
    let Some(env) = setup("run_as_root_cannot_reach_the_host", Who::Root) else {
        return;
    };
    let debian = crate::common::images_dir("run_as_root_cannot_reach_the_host")
        .unwrap()
        .join("docker/debian-docker-save.tar");
    escapes_stay_inside(&env, &debian);
}

#[test]
fn run_rootless_cannot_reach_the_host() {
    let Some(env) = setup("run_rootless_cannot_reach_the_host", Who::RangedUser) else {
        return;
    };
    let debian = shared(&crate::common::images_dir("run_rootless_cannot_reach_the_host").unwrap())
        .dir
        .join("debian-docker-save.tar");
    if !debian.exists() {
        let src = crate::common::images_dir("run_rootless_cannot_reach_the_host")
            .unwrap()
            .join("docker/debian-docker-save.tar");
        std::fs::copy(src, &debian).unwrap();
        std::fs::set_permissions(&debian, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    escapes_stay_inside(&env, &debian);
}

#[test]
fn run_setup_failures_leave_no_container() {
    let Some(env) = setup("run_setup_failures_leave_no_container", Who::Root) else {
        return;
    };
    let bad_volume = env.run_busybox(&["-v", "/no/such/dir:/x"], &["true"]);
    assert_code(&bad_volume, 125);
    assert!(String::from_utf8_lossy(&bad_volume.stderr).contains("/no/such/dir"));
    let no_image = env.rfs(&["run", "/no/such/image", "true"]);
    assert_code(&no_image, 125);
    let ps = text(&env.rfs(&["ps", "-a"]));
    assert_eq!(ps.lines().count(), 1, "{ps}");
    let no_cmd = env.run_busybox(&["--entrypoint", ""], &[]);
    assert_code(&no_cmd, 125);
    assert!(String::from_utf8_lossy(&no_cmd.stderr).contains("no command"));
}

/// An image whose `/etc/hosts` and a volume target are symlinks to host paths: the mounts
/// rfs makes follow them inside the container, and the host's files stay untouched.
#[test]
fn run_symlinks_in_the_image_do_not_lead_mounts_to_the_host() {
    let test = "run_symlinks_in_the_image_do_not_lead_mounts_to_the_host";
    let Some(env) = setup(test, Who::Root) else {
        return;
    };
    let images = crate::common::images_dir(test).unwrap();
    let s = Scratch::new();
    let canary_file = s.dir.path().join("canary-file");
    std::fs::write(&canary_file, "host secret\n").unwrap();
    let canary_dir = s.mkdir("canary-dir");
    let vol = s.mkdir("vol");
    std::fs::write(vol.join("from-volume"), "v\n").unwrap();
    let rootfs = s.mkdir("rootfs");
    crate::common::unpack_busybox_export(&images, &rootfs);
    std::fs::remove_file(rootfs.join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink(&canary_file, rootfs.join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink(&canary_dir, rootfs.join("data")).unwrap();
    let image = s.dir.path().join("image.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&image)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());

    let volume = format!("{}:/data", vol.display());
    let out = env.rfs(&[
        "run",
        "-v",
        &volume,
        image.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "grep -c localhost /etc/hosts; ls /data; echo pwned > /etc/hosts; touch /data/new",
    ]);
    assert_code(&out, 0);
    assert_eq!(text(&out), "2\nfrom-volume\n");
    assert_eq!(
        std::fs::read_to_string(&canary_file).unwrap(),
        "host secret\n"
    );
    assert_eq!(std::fs::read_dir(&canary_dir).unwrap().count(), 0);
    assert!(vol.join("new").exists());
}

#[test]
fn run_interactive_and_read_only() {
    let Some(env) = setup("run_interactive_and_read_only", Who::Root) else {
        return;
    };
    let bb = env.busybox.to_string_lossy().into_owned();
    let mut child = env
        .command(&[
            OsStr::new("run"),
            OsStr::new("-i"),
            OsStr::new(&bb),
            OsStr::new("cat"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    assert_eq!(text(&out), "through stdin\n");
    let without_i = env.run_busybox(&[], &["cat; echo done"]);
    assert_eq!(text(&without_i), "done\n", "stdin is /dev/null without -i");

    let ro = env.run_busybox(
        &["--read-only", "-u", "root"],
        &["touch /x 2>/dev/null || echo ro; echo ok > /etc/hostname && echo etc-writable"],
    );
    assert_code(&ro, 0);
    assert_eq!(text(&ro), "ro\netc-writable\n");
}

/// SOURCE may name an image of the store (`rfs load`, `rfs tag`) instead of a path.
#[test]
fn run_an_image_of_the_store_by_name() {
    let Some(env) = setup("run_an_image_of_the_store_by_name", Who::Root) else {
        return;
    };
    let bb = env.busybox.to_string_lossy().into_owned();
    assert_code(
        &env.rfs(&["load", "-q", "-t", "busybox:test", "-i", &bb]),
        0,
    );
    let out = env.rfs(&["run", "--rm", "busybox:test", "id -un; echo $FOO"]);
    assert_code(&out, 0);
    assert_eq!(text(&out), "app\nbar\n");
}

//! `rfs run [-d]`, `rfs ps`, `rfs logs`, `rfs exec`, `rfs stop`/`kill`/`wait`, `rfs export`,
//! `rfs cp` and `rfs rm` through the real binary with the busybox and Debian test images: exit
//! codes, the image config (Env, WorkingDir, User), writes landing in the container's own
//! upper, two containers at once, `--rm`, volumes, `--net none`, signals, `-t`, and the ways
//! out of a container that must stay shut. As root, and as the unprivileged user `rfstest`
//! (with a subuid range) and `nobody` (without one).
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

/// A test as root and one as `rfstest` (with a subuid range), each calling `body(&env)`, or
/// `body(&env, &images)` with `images`.
macro_rules! both_ways {
    ($body:ident: $root:ident, $rootless:ident) => {
        #[test]
        fn $root() {
            let Some(env) = setup(stringify!($root), Who::Root) else {
                return;
            };
            $body(&env);
        }

        #[test]
        fn $rootless() {
            let Some(env) = setup(stringify!($rootless), Who::RangedUser) else {
                return;
            };
            $body(&env);
        }
    };
    ($body:ident, images: $root:ident, $rootless:ident) => {
        #[test]
        fn $root() {
            let Some(env) = setup(stringify!($root), Who::Root) else {
                return;
            };
            $body(&env, &crate::common::images_dir(stringify!($root)).unwrap());
        }

        #[test]
        fn $rootless() {
            let Some(env) = setup(stringify!($rootless), Who::RangedUser) else {
                return;
            };
            $body(
                &env,
                &crate::common::images_dir(stringify!($rootless)).unwrap(),
            );
        }
    };
}

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

// ---------------------------------------------------------------------------------------------
// rfs export

/// One member of an exported tar: kind, permission bits, owner, size, link target, sha256 of
/// the data, modification time.
#[derive(Clone, Debug, PartialEq)]
struct Member {
    kind: char,
    mode: u32,
    owner: (u64, u64),
    size: u64,
    link: Option<String>,
    sha256: String,
    mtime: u64,
}

/// The members of a tar archive by path (no leading `./`, no trailing `/`).
fn tar_members(bytes: &[u8]) -> std::collections::BTreeMap<String, Member> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut members = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("{path}: unexpected tar entry type {other:?}"),
        };
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string().trim_start_matches("./").to_string());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let member = Member {
            kind,
            mode: h.mode().unwrap() & 0o7777,
            owner: (h.uid().unwrap(), h.gid().unwrap()),
            size: data.len() as u64,
            link,
            sha256: format!("{:x}", sha2::Sha256::digest(&data)),
            mtime: h.mtime().unwrap(),
        };
        assert!(
            members.insert(path.clone(), member).is_none(),
            "{path} is in the archive twice"
        );
    }
    members
}

/// The oracle: `docker export` of the container that made `rfs/busybox-committed` (the
/// test images' `docker/busybox-docker-export.tar`) against `rfs export` of a container of
/// that image which changed nothing: the same tree, entry by entry, data and times included,
/// but for what each runtime adds to run a container.
#[test]
fn export_equals_docker_export_of_the_same_container_state() {
    let test = "export_equals_docker_export_of_the_same_container_state";
    let Some(env) = setup(test, Who::Root) else {
        return;
    };
    let images = crate::common::images_dir(test).unwrap();
    let archive = images.join("docker/busybox-docker-save.tar");
    assert_code(
        &env.rfs(&["load", "-q", "-i", archive.to_str().unwrap()]),
        0,
    );
    let run = env.rfs(&["run", "--name", "same", "rfs/busybox-committed:latest"]);
    assert_code(&run, 0);
    assert_eq!(text(&run), "committed\n", "the image's own command ran");
    let out = env.rfs(&["export", "same"]);
    assert_code(&out, 0);
    let mut got = tar_members(&out.stdout);
    let mut want =
        tar_members(&std::fs::read(images.join("docker/busybox-docker-export.tar")).unwrap());
    // Docker's runtime files, which rfs binds instead of writing into the tree.
    for p in [
        ".dockerenv",
        "dev/console",
        "dev/pts",
        "dev/shm",
        "etc/mtab",
    ] {
        assert!(want.remove(p).is_some(), "docker export lacks {p}");
    }
    // Both runtimes make the mountpoints of /etc/hosts, /etc/hostname, /etc/resolv.conf and
    // /dev in an init layer (empty files, mode 0755 as docker makes them); docker stamps them
    // with the container's creation time, rfs with the epoch, and /etc's time moves with them.
    for p in ["dev", "etc", "etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        for side in [&mut got, &mut want] {
            side.get_mut(p)
                .unwrap_or_else(|| panic!("{p} missing from an export"))
                .mtime = 0;
        }
    }
    let (got_paths, want_paths): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
    assert_eq!(got_paths, want_paths, "the same paths");
    for (path, w) in &want {
        assert_eq!(&got[path], w, "/{path}");
    }
}

/// A rootless container's changes — a deleted file, a renamed directory of the image, a new
/// file with a hard link and another owner, a directory made where one was renamed away — are
/// in its export exactly as the container saw its own tree.
#[test]
fn export_of_a_rootless_container_is_its_own_view() {
    let Some(env) = setup(
        "export_of_a_rootless_container_is_its_own_view",
        Who::RangedUser,
    ) else {
        return;
    };
    // The container lists its own tree (the root filesystem only, not /proc, /sys, /dev) with
    // busybox stat: path|type|size|uid|gid|mode.
    let script = "rm /opt/data/remove && mv /opt/data /opt/moved && echo new > /new && \
                  ln /new /new-link && chown 1000:1000 /new && mkdir /opt/data && \
                  echo fresh > /opt/data/fresh && \
                  find / -xdev | while read p; do stat -c '%n|%F|%s|%u|%g|%a' \"$p\"; done";
    let run = env.run_busybox(&["--name", "changer", "-u", "root"], &[script]);
    assert_code(&run, 0);
    let out = env.rfs(&["export", "changer"]);
    assert_code(&out, 0);
    let got = tar_members(&out.stdout);

    assert!(
        !got.keys().any(|p| p.contains(".wh.")),
        "no whiteouts: {got:?}"
    );
    assert!(!got.contains_key("opt/data/remove") && !got.contains_key("opt/moved/remove"));
    let capbin = &got["opt/moved/capbin"];
    assert_eq!(
        (capbin.kind, capbin.size),
        ('f', 1_982_256),
        "renamed dir keeps its files"
    );
    assert_eq!(got["opt/moved/hl2"].link.as_deref(), Some("opt/moved/hl1"));
    let new = &got["new"];
    assert_eq!((new.kind, new.owner, new.size), ('f', (1000, 1000), 4));
    assert_eq!(got["new-link"].kind, 'h');
    assert_eq!(got["new-link"].link.as_deref(), Some("new"));
    let data: Vec<&String> = got.keys().filter(|p| p.starts_with("opt/data/")).collect();
    assert_eq!(
        data,
        ["opt/data/fresh"],
        "a new dir where one was renamed away is empty"
    );

    // Every path the container saw is exported with the type, owner and mode it saw.
    let mut seen = std::collections::BTreeSet::new();
    for line in text(&run).lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 6, "{line}");
        let path = f[0].trim_start_matches('/');
        if path.is_empty() {
            continue;
        }
        let m = got
            .get(path)
            .unwrap_or_else(|| panic!("/{path} is in the container but not in its export"));
        seen.insert(path.to_string());
        // What rfs mounts over the init layer's mountpoints shows the mounted file system's
        // attributes inside; the export has the mountpoints.
        if [
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "proc",
            "sys",
            "dev",
        ]
        .contains(&path)
        {
            continue;
        }
        let kind = match f[1] {
            "directory" => 'd',
            "symbolic link" => 'l',
            "regular file" | "regular empty file" => {
                if m.kind == 'h' {
                    'h'
                } else {
                    'f'
                }
            }
            "character device" | "character special file" => 'c',
            "fifo" | "FIFO" => 'p',
            other => panic!("{path}: type {other}"),
        };
        assert_eq!(m.kind, kind, "/{path}");
        assert_eq!(
            m.owner,
            (f[3].parse().unwrap(), f[4].parse().unwrap()),
            "/{path}"
        );
        assert_eq!(format!("{:o}", m.mode), f[5], "/{path}");
        if kind == 'f' {
            assert_eq!(m.size.to_string(), f[2], "/{path}");
        }
    }
    let exported: std::collections::BTreeSet<String> = got
        .keys()
        .filter(|p| !["proc/", "sys/", "dev/"].iter().any(|m| p.starts_with(m)))
        .cloned()
        .collect();
    assert_eq!(
        seen, exported,
        "the export holds what the container saw, no more"
    );
}

// ---------------------------------------------------------------------------------------------
// rfs cp

/// A directory every caller may write, in the shared test directory, removed on drop.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(env: &Env, images: &Path, prefix: &str) -> SharedDir {
        let dir = shared(images).dir.join(format!(
            "{prefix}-{:?}-{}",
            env.who,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        SharedDir(dir)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rfs cp` out of and into a stopped container, through its own view: a path through the
/// container's symlink to `/etc` reads and writes the container's `/etc`, never the host's; a
/// renamed image directory comes out whole with its symlinks as symlinks; what goes in shows
/// in `rfs diff` and `rfs export` as root's, with its mode.
fn cp_round_trip(env: &Env, images: &Path) {
    let shared_dir = SharedDir::new(env, images, "cp");
    let host = shared_dir.0.clone();
    let hs = |p: &str| host.join(p).to_str().unwrap().to_owned();

    let run = env.run_busybox(
        &["--name", "box", "-u", "root"],
        &["ln -s /etc /escape && mv /opt/data /opt/moved && echo made > /tmp/made"],
    );
    assert_code(&run, 0);

    // Out: through the container's absolute symlink, into an existing host directory.
    std::fs::create_dir(host.join("out")).unwrap();
    std::fs::set_permissions(host.join("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_code(&env.rfs(&["cp", "box:/escape/passwd", &hs("out")]), 0);
    let passwd = std::fs::read_to_string(host.join("out/passwd")).unwrap();
    assert!(
        passwd.contains("app:x:1000:1000:app:/home/app:/bin/sh"),
        "the container's /etc/passwd, not the host's: {passwd}"
    );
    // A renamed image directory, to a new host path.
    assert_code(&env.rfs(&["cp", "box:/opt/moved", &hs("moved")]), 0);
    assert_eq!(
        std::fs::metadata(host.join("moved/capbin")).unwrap().len(),
        1_982_256
    );
    assert_eq!(
        std::fs::read_link(host.join("moved/link-to-keep")).unwrap(),
        Path::new("/opt/opq/c"),
        "a symlink comes out as a symlink"
    );
    assert!(!host.join("moved/remove").is_symlink());

    // In: a file through the container's symlink, and a directory's contents.
    let name = format!("rfs-cp-test-{}", std::process::id());
    std::fs::write(host.join(&name), "into the container\n").unwrap();
    std::fs::set_permissions(host.join(&name), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_code(&env.rfs(&["cp", &hs(&name), "box:/escape/"]), 0);
    assert!(
        !Path::new("/etc").join(&name).exists(),
        "written into the host's /etc"
    );
    std::fs::create_dir_all(host.join("site/css")).unwrap();
    std::fs::write(host.join("site/css/a.css"), "body{}").unwrap();
    std::fs::write(host.join("site/index.html"), "<p>hi</p>").unwrap();
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(host.join("site"))
        .status();
    assert_code(
        &env.rfs(&["cp", &format!("{}/.", hs("site")), "box:/tmp"]),
        0,
    );

    let diff = env.rfs(&["diff", "box"]);
    assert_code(&diff, 0);
    let diff = text(&diff);
    for line in [
        format!("A /etc/{name}"),
        "A /tmp/css/a.css".into(),
        "A /tmp/index.html".into(),
        "A /tmp/made".into(),
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} not in:\n{diff}");
    }
    let export = env.rfs(&["export", "box"]);
    assert_code(&export, 0);
    let members = tar_members(&export.stdout);
    let copied = &members[&format!("etc/{name}")];
    assert_eq!(
        (copied.owner, copied.mode, copied.size),
        ((0, 0), 0o755, 19)
    );
    assert_eq!(members["tmp/css/a.css"].size, 6);

    // Errors name the container path.
    let missing = env.rfs(&["cp", "box:/no/such", &hs("out")]);
    assert_code(&missing, 1);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("box:/no/such") && err.contains("no such file"),
        "{err}"
    );
}

both_ways!(
    cp_round_trip, images:
    cp_as_root_copies_through_the_containers_view,
    cp_rootless_copies_through_the_containers_view
);

// ---------------------------------------------------------------------------------------------
// rfs stop, kill, wait

/// Starts `rfs run --name NAME -u root busybox SCRIPT` in the background and waits until the
/// script prints `ready`.
fn start_in_background(env: &Env, name: &str, script: &str) -> std::process::Child {
    let bb = env.busybox.to_string_lossy().into_owned();
    let mut child = env.spawn(&["run", "--name", name, "-u", "root", &bb, script]);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "the container did not start");
    child
}

/// `rfs stop` of a command that ignores SIGTERM kills it after `-t` (exit 137, as docker);
/// one that exits on SIGTERM ends with its own status; `rfs wait` prints the status from
/// another process; `rfs kill -s` delivers the signal asked for; a stopped container is
/// neither signalled nor an error to stop again.
fn stop_kill_wait(env: &Env) {
    let mut stubborn = start_in_background(
        env,
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    );
    let start = Instant::now();
    assert_code(&env.rfs(&["stop", "-t", "1", "stubborn"]), 0);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "stop did not wait for the grace period"
    );
    assert_eq!(stubborn.wait().unwrap().code(), Some(137));
    let waited = env.rfs(&["wait", "stubborn"]);
    assert_code(&waited, 0);
    assert_eq!(text(&waited), "137\n");
    let ps = env.rfs(&["ps", "-a", "--format", "json"]);
    assert!(text(&ps).contains("Exited (137)"), "{}", text(&ps));
    assert_code(&env.rfs(&["stop", "stubborn"]), 0);
    let not_running = env.rfs(&["kill", "stubborn"]);
    assert_code(&not_running, 1);
    assert!(String::from_utf8_lossy(&not_running.stderr).contains("not running"));

    let mut polite = start_in_background(
        env,
        "polite",
        "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done",
    );
    // A waiter in another process sees the end.
    let waiter = env.spawn(&["wait", "polite"]);
    assert_code(&env.rfs(&["stop", "polite"]), 0);
    assert_eq!(polite.wait().unwrap().code(), Some(3));
    let waited = waiter.wait_with_output().unwrap();
    assert_code(&waited, 0);
    assert_eq!(text(&waited), "3\n");

    let mut hup = start_in_background(
        env,
        "hup",
        "trap 'exit 7' HUP; echo ready; while :; do sleep 0.1; done",
    );
    assert_code(&env.rfs(&["kill", "-s", "HUP", "hup"]), 0);
    assert_eq!(hup.wait().unwrap().code(), Some(7));
    let bad = env.rfs(&["kill", "-s", "NOPE", "hup"]);
    assert_code(&bad, 1);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown signal"));
}

both_ways!(stop_kill_wait: stop_kill_wait_as_root, stop_kill_wait_rootless);

// ---------------------------------------------------------------------------------------------
// rfs run -d, rfs logs

/// The parent of process `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The recorded pid of container `name`, while it runs.
fn container_pid(env: &Env, name: &str) -> i32 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.container_dir(name).join("state.json")).unwrap())
            .unwrap();
    state["pid"].as_i64().unwrap() as i32
}

/// `rfs run -d` returns at once with the container's ID and leaves it running under a
/// supervisor: `ps` shows it up, `logs` gives its stdout and stderr apart (also `--tail` and
/// after it ended), `logs -f` follows it to its end, `stop` ends it with the status its
/// command got (143 for SIGTERM) that `wait` prints. A supervisor killed with SIGKILL takes
/// its container and the container's mount with it. A start that fails says why, exit 125,
/// and leaves no container.
fn detached(env: &Env) {
    let bb = env.busybox.to_string_lossy().into_owned();
    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "bg",
        &bb,
        "echo out; echo err >&2; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    ]);
    assert_code(&out, 0);
    let id = text(&out).trim().to_string();
    assert!(
        id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "rfs run -d prints the ID: {id:?}"
    );
    let ps = env.rfs(&["ps"]);
    let row = text(&ps)
        .lines()
        .find(|l| l.contains(" bg "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        row.starts_with(&id[..12]) && row.contains("Up "),
        "{}",
        text(&ps)
    );
    // Wait until it has ticked a few times.
    let start = Instant::now();
    loop {
        let logs = env.rfs(&["logs", "bg"]);
        if text(&logs).contains("tick 3\n") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no ticks: {}",
            text(&logs)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = env.rfs(&["logs", "bg"]);
    assert_code(&logs, 0);
    assert!(
        text(&logs).starts_with("out\ntick 1\ntick 2\n"),
        "{}",
        text(&logs)
    );
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "err\n");
    let tail = env.rfs(&["logs", "--tail", "1", "-t", "bg"]);
    let last = text(&tail);
    assert_eq!(last.lines().count(), 1, "{last}");
    let (time, line) = last.trim_end().split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    assert!(line.starts_with("tick "), "{line}");

    let follower = env.spawn(&["logs", "-f", "--tail", "0", "bg"]);
    std::thread::sleep(Duration::from_millis(600));
    assert_code(&env.rfs(&["stop", "bg"]), 0);
    let followed = follower.wait_with_output().unwrap();
    assert_code(&followed, 0);
    assert!(
        text(&followed).contains("tick"),
        "-f printed what came after it started: {}",
        text(&followed)
    );
    let waited = env.rfs(&["wait", "bg"]);
    assert_eq!(text(&waited), "143\n");
    let after = env.rfs(&["logs", "bg"]);
    assert!(
        text(&after).starts_with("out\n"),
        "the log outlives the container"
    );

    // The supervisor dies: the container goes with it (and the mount, which lives in the
    // container's mount namespace, with the last of its processes).
    let nap = format!("sleep {}", 1000 + std::process::id() % 1000);
    let out = env.rfs(&["run", "-d", "--name", "orphan", &bb, &nap]);
    assert_code(&out, 0);
    let sandbox = container_pid(env, "orphan");
    let supervisor = parent_of(sandbox);
    assert_ne!(supervisor, std::process::id() as i32);
    let napping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .any(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.trim_end() == nap || c.trim_end() == format!("/bin/sh -c {nap}")
            })
    };
    let start = Instant::now();
    while !napping() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the container's command never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{sandbox}")).exists() || napping() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the container outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ps = env.rfs(&["ps"]);
    assert!(!text(&ps).contains("orphan"), "{}", text(&ps));
    let all = text(&env.rfs(&["ps", "-a"]));
    let row = all
        .lines()
        .find(|l| l.contains(" orphan "))
        .unwrap_or_default();
    assert!(row.contains("Exited (?)"), "ps -a shows it ended: {all}");

    let bad = env.rfs(&["run", "-d", "--name", "never", "/no/such/image"]);
    assert_code(&bad, 125);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/no/such/image"));
    assert!(!text(&env.rfs(&["ps", "-a"])).contains("never"));
}

both_ways!(detached: run_detached_as_root, run_detached_rootless);

// ---------------------------------------------------------------------------------------------
// rfs exec

/// `rfs exec` joins a running container: its files (and what the container wrote), its
/// processes (pid 1 is the container's command), its user, environment and working directory
/// unless `-u`, `-e`, `-w` say otherwise; what it writes stays in the container; stdin with
/// `-i`; the command's exit status; no host path; a stopped container is refused (125).
fn exec_joins(env: &Env) {
    let bb = env.busybox.to_string_lossy().into_owned();
    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "box",
        &bb,
        "echo hi > /home/app/mark; while :; do sleep 1; done",
    ]);
    assert_code(&out, 0);
    let start = Instant::now();
    loop {
        let seen = env.rfs(&["exec", "box", "cat", "/home/app/mark"]);
        if text(&seen) == "hi\n" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = env.rfs(&[
        "exec",
        "box",
        "sh",
        "-c",
        "id -un; pwd; echo $FOO; cat /proc/1/cmdline | tr '\\0' ' '; echo; test -e /work || echo contained",
    ]);
    assert_code(&out, 0);
    assert_eq!(
        text(&out),
        "app\n/home/app\nbar\n/bin/sh -c echo hi > /home/app/mark; while :; do sleep 1; done \ncontained\n"
    );
    let out = env.rfs(&[
        "exec",
        "-u",
        "root",
        "-w",
        "/tmp",
        "-e",
        "FOO=baz",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $FOO; echo from-exec > /tmp/written",
    ]);
    assert_code(&out, 0);
    assert_eq!(text(&out), "0\n/tmp\nbaz\n");
    assert_code(&env.rfs(&["exec", "box", "sh", "-c", "exit 7"]), 7);
    // -d: started, and left to run.
    let detached = env.rfs(&[
        "exec",
        "-d",
        "box",
        "sh",
        "-c",
        "sleep 0.3; echo bg > /tmp/bg",
    ]);
    assert_code(&detached, 0);
    let start = Instant::now();
    while text(&env.rfs(&["exec", "box", "cat", "/tmp/bg"])) != "bg\n" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "exec -d never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // -t: a terminal of the container's own devpts, named so inside.
    let tty = env.rfs(&[
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo terminal; tty; exit 4",
    ]);
    assert_code(&tty, 4);
    assert!(
        text(&tty).starts_with("terminal\r\n/dev/pts/"),
        "{:?}",
        text(&tty)
    );
    assert_code(&env.rfs(&["exec", "box", "/no/such/program"]), 127);
    // -i: the caller's stdin.
    let mut child = env
        .command(&[
            OsStr::new("exec"),
            OsStr::new("-i"),
            OsStr::new("box"),
            OsStr::new("cat"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"typed\n").unwrap();
    let typed = child.wait_with_output().unwrap();
    assert_eq!(text(&typed), "typed\n");

    assert_code(&env.rfs(&["stop", "-t", "1", "box"]), 0);
    let export = env.rfs(&["export", "box"]);
    let members = tar_members(&export.stdout);
    assert_eq!(
        members["tmp/written"].size, 10,
        "exec's write is the container's"
    );
    let refused = env.rfs(&["exec", "box", "true"]);
    assert_code(&refused, 125);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not running"));
}

both_ways!(exec_joins: exec_as_root_joins_the_container, exec_rootless_joins_the_container);

// ---------------------------------------------------------------------------------------------
// --net private, -p, rfs port

/// An image whose busybox has every applet (the host's busybox-static, with `httpd`) and a
/// page in /www, readable by every caller; imported into `env`'s store as `web:1`.
fn import_web_image(env: &Env, images: &Path) {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir = &shared(images).dir;
        let path = dir.join("busybox-web.tar");
        let s = Scratch::new();
        let rootfs = s.mkdir("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("/bin/busybox (busybox-static) is installed");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::write(rootfs.join("www/index.html"), "<p>served by rfs</p>\n").unwrap();
        let fresh = dir.join(format!("busybox-web.{}", std::process::id()));
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
        path
    });
    let out = env.rfs(&[
        "import",
        path.to_str().unwrap(),
        "web:1",
        "-c",
        r#"ENTRYPOINT ["/bin/busybox"]"#,
    ]);
    assert_code(&out, 0);
}

/// A port of 127.0.0.1 that is free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /` on 127.0.0.1:`port`, retried until the server answers (10 s).
fn fetch(port: u16) -> String {
    use std::io::{Read, Write};
    let start = Instant::now();
    loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut got = String::new();
            s.read_to_string(&mut got)?;
            Ok(got)
        });
        match answer {
            Ok(got) if got.starts_with("HTTP/") => return got,
            other => assert!(
                start.elapsed() < Duration::from_secs(10),
                "no answer on port {port}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--net private` (the default): the container has a network namespace of its own, and
/// `-p 127.0.0.1:PORT:80` makes its busybox httpd reachable from the host; two containers
/// serve port 80 each at once; `rfs ps` and `rfs port` show the mappings; a host port in use
/// fails the start (125, no container); stopping the container (or killing its supervisor)
/// frees the host port.
fn published_ports(env: &Env, images: &Path) {
    import_web_image(env, images);
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let own = env.rfs(&["run", "--rm", "web:1", "readlink", "/proc/self/ns/net"]);
    assert_code(&own, 0);
    assert_ne!(
        text(&own).trim(),
        host_ns.to_str().unwrap(),
        "a network of its own"
    );
    let shared_net = env.rfs(&[
        "run",
        "--rm",
        "--net",
        "host",
        "web:1",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(text(&shared_net).trim(), host_ns.to_str().unwrap());

    let (p1, p2) = (free_port(), free_port());
    for (name, port) in [("web1", p1), ("web2", p2)] {
        let publish = format!("127.0.0.1:{port}:80");
        let out = env.rfs(&[
            "run", "-d", "--name", name, "-p", &publish, "web:1", "httpd", "-f", "-p", "80", "-h",
            "/www",
        ]);
        assert_code(&out, 0);
    }
    for port in [p1, p2] {
        let page = fetch(port);
        assert!(page.contains("<p>served by rfs</p>"), "{page}");
    }
    // Two detached containers of one image: their uppers apart.
    let in_box = |name: &str, script: &str| env.rfs(&["exec", name, "sh", "-c", script]);
    assert_code(&in_box("web1", "echo one > /www/mine"), 0);
    assert_code(&in_box("web2", "test -e /www/mine"), 1);
    assert_code(&in_box("web1", "test -e /www/mine"), 0);
    let ps = text(&env.rfs(&["ps"]));
    assert!(ps.contains(&format!("127.0.0.1:{p1}->80/tcp")), "{ps}");
    let port = env.rfs(&["port", "web2"]);
    assert_eq!(text(&port), format!("80/tcp -> 127.0.0.1:{p2}\n"));

    let taken = format!("127.0.0.1:{p1}:80");
    let busy = env.rfs(&[
        "run", "-d", "--name", "clash", "-p", &taken, "web:1", "true",
    ]);
    assert_code(&busy, 125);
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(
        err.contains("pasta") && err.contains(&p1.to_string()),
        "{err}"
    );
    assert!(!text(&env.rfs(&["ps", "-a"])).contains("clash"));

    assert_code(&env.rfs(&["stop", "-t", "1", "web1"]), 0);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", p1)).is_ok(),
        "the host port is free once the container stopped"
    );
    let sandbox = container_pid(env, "web2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent_of(sandbox)),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let start = Instant::now();
    while std::net::TcpListener::bind(("127.0.0.1", p2)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the host port stayed bound after the supervisor died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = env.rfs(&[
        "run", "--rm", "--net", "host", "-p", "8080:80", "web:1", "true",
    ]);
    assert_code(&bad, 125);
}

both_ways!(published_ports, images: published_ports_as_root, published_ports_rootless);

// ---------------------------------------------------------------------------------------------
// --memory, --cpus, --pids-limit

/// As root, a control group of the container's own: a command that fills more memory than
/// `--memory` is killed (137) where a smaller one lives; `--pids-limit` stops a fork loop that
/// runs to its end without it; `--cpus` runs; nothing of the groups is left afterwards.
#[test]
fn limits_as_root_bound_memory_and_processes() {
    let Some(env) = setup("limits_as_root_bound_memory_and_processes", Who::Root) else {
        return;
    };
    let fill = |mib: u32| {
        format!(
            "x=$(head -c {} /dev/zero | tr '\\0' a); echo kept ${{#x}}",
            mib << 20
        )
    };
    assert_code(
        &env.run_busybox(&["--rm", "--memory", "32m"], &[&fill(100)]),
        137,
    );
    let small = env.run_busybox(&["--rm", "--memory", "64m"], &[&fill(8)]);
    assert_code(&small, 0);
    assert_eq!(text(&small), format!("kept {}\n", 8 << 20));

    let forks = "i=0; while [ $i -lt 30 ]; do sleep 1 & i=$((i+1)); done; wait; echo done";
    let free = env.run_busybox(&["--rm", "-u", "root"], &[forks]);
    assert_code(&free, 0);
    assert_eq!(text(&free), "done\n");
    let bounded = env.run_busybox(&["--rm", "-u", "root", "--pids-limit", "10"], &[forks]);
    assert_ne!(bounded.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&bounded.stderr).contains("can't fork"),
        "{bounded:?}"
    );
    // --cpus: the container's group has half a CPU per period, as the kernel reads it.
    let bb = env.busybox.to_string_lossy().into_owned();
    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "halfcpu",
        "--cpus",
        "0.5",
        &bb,
        "sleep 100",
    ]);
    assert_code(&out, 0);
    let id = text(&out).trim().to_string();
    let v1 = Path::new("/sys/fs/cgroup/cpu").join(format!("rfs-{id}"));
    let quota = if v1.exists() {
        let q = std::fs::read_to_string(v1.join("cpu.cfs_quota_us")).unwrap();
        let p = std::fs::read_to_string(v1.join("cpu.cfs_period_us")).unwrap();
        format!("{} {}", q.trim(), p.trim())
    } else {
        let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(|r| Path::new(r).join(format!("rfs-{id}/cpu.max")))
            .find(|p| p.exists())
            .expect("the container's cpu group");
        std::fs::read_to_string(v2).unwrap().trim().to_string()
    };
    assert_eq!(quota, "50000 100000");
    let procs = std::fs::read_to_string(if v1.exists() {
        v1.join("cgroup.procs")
    } else {
        Path::new("/sys/fs/cgroup").join(format!("rfs-{id}/cgroup.procs"))
    })
    .unwrap_or_default();
    assert!(
        !procs.trim().is_empty(),
        "the container's processes are in it"
    );
    assert_code(&env.rfs(&["stop", "-t", "1", "halfcpu"]), 0);

    // The group goes with the container.
    assert_code(
        &env.run_busybox(
            &["--name", "limited", "--memory", "64m", "--pids-limit", "50"],
            &["true"],
        ),
        0,
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.container_dir("limited").join("state.json")).unwrap(),
    )
    .unwrap();
    let id = state["id"].as_str().unwrap();
    for hierarchy in ["memory", "pids", "unified", ""] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(format!("rfs-{id}"));
        assert!(!dir.exists(), "{} left", dir.display());
    }
    let bad = env.run_busybox(&["--rm", "--memory", "lots"], &["true"]);
    assert_code(&bad, 125);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--memory"));
}

/// Rootless, with no delegated cgroup (this host has v1 controllers, which are never
/// delegated): limits are refused before anything starts, with the reason and the remedy.
#[test]
fn limits_rootless_say_why_they_cannot_be_set() {
    let Some(env) = setup(
        "limits_rootless_say_why_they_cannot_be_set",
        Who::RangedUser,
    ) else {
        return;
    };
    let out = env.run_busybox(&["--rm", "--memory", "64m"], &["echo started"]);
    if out.status.code() == Some(0) {
        // A host that delegates a cgroup v2 subtree to the user: then the limit must hold.
        let fill = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo kept";
        assert_code(&env.run_busybox(&["--rm", "--memory", "32m"], &[fill]), 137);
        return;
    }
    assert_code(&out, 125);
    assert_eq!(text(&out), "", "the command never started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cgroup") && err.contains("root"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// rfs top, --stop-signal

/// `rfs top` lists the container's processes (its command and what it started), none of the
/// host's; `rfs stop` sends the container's `--stop-signal`.
fn top_and_stop_signal(env: &Env) {
    let bb = env.busybox.to_string_lossy().into_owned();
    let nap = format!("sleep {}", 2000 + std::process::id() % 1000);
    let script = format!("trap 'exit 9' USR1; {nap} & while :; do sleep 0.1; done");
    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "topped",
        "--stop-signal",
        "USR1",
        &bb,
        &script,
    ]);
    assert_code(&out, 0);
    let start = Instant::now();
    let listing = loop {
        let top = env.rfs(&["top", "topped"]);
        assert_code(&top, 0);
        // The nap itself (the shell's command line names it too, before the trap is set).
        if text(&top)
            .lines()
            .any(|l| l.ends_with(&format!(" {nap}")) && !l.contains("trap"))
        {
            break text(&top);
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", text(&top));
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut lines = listing.lines();
    assert!(lines.next().unwrap().starts_with("PID"));
    let commands: Vec<&str> = lines
        .map(|l| l.split_whitespace().nth(3).unwrap_or(""))
        .collect();
    assert!(
        commands.iter().all(|c| *c == "/bin/sh" || *c == "sleep"),
        "only the container's processes: {listing}"
    );
    assert_code(&env.rfs(&["stop", "topped"]), 0);
    assert_eq!(
        text(&env.rfs(&["wait", "topped"])),
        "9\n",
        "USR1 reached the trap"
    );
    assert_code(&env.rfs(&["top", "topped"]), 1);
    let bad = env.run_busybox(&["--rm", "--stop-signal", "NOPE"], &["true"]);
    assert_code(&bad, 125);
}

both_ways!(top_and_stop_signal: top_and_stop_signal_as_root, top_and_stop_signal_rootless);

// ---------------------------------------------------------------------------------------------
// rfs start, restart, --restart on-failure

/// `rfs start` runs a stopped container again over the upper it left (attached with `-a`,
/// else detached with its output in `rfs logs`); `rfs restart` stops and starts a running
/// one, its files kept; `--restart on-failure:2` starts a failing command twice more and no
/// more.
fn start_and_restart(env: &Env) {
    let bb = env.busybox.to_string_lossy().into_owned();
    let count = "echo run >> /count; wc -l < /count";
    let first = env.rfs(&["run", "--name", "again", "-u", "root", &bb, count]);
    assert_code(&first, 0);
    assert_eq!(text(&first).trim(), "1");
    let attached = env.rfs(&["start", "-a", "again"]);
    assert_code(&attached, 0);
    assert_eq!(text(&attached).trim(), "2", "the upper is kept");
    let detached = env.rfs(&["start", "again"]);
    assert_code(&detached, 0);
    assert_eq!(text(&detached), "again\n");
    assert_eq!(text(&env.rfs(&["wait", "again"])), "0\n");
    assert_eq!(text(&env.rfs(&["logs", "again"])).trim(), "3");

    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "svc",
        &bb,
        "while :; do sleep 0.1; done",
    ]);
    assert_code(&out, 0);
    assert_code(&env.rfs(&["exec", "svc", "touch", "/home/app/kept"]), 0);
    let before = container_pid(env, "svc");
    let restarted = env.rfs(&["restart", "-t", "1", "svc"]);
    assert_code(&restarted, 0);
    assert_eq!(text(&restarted), "svc\n");
    assert_ne!(container_pid(env, "svc"), before, "a new sandbox");
    assert!(text(&env.rfs(&["ps"])).contains(" svc "));
    assert_code(
        &env.rfs(&["exec", "svc", "test", "-f", "/home/app/kept"]),
        0,
    );
    assert_code(&env.rfs(&["stop", "-t", "1", "svc"]), 0);

    let failing = "echo try >> /tries; wc -l < /tries; exit 3";
    let out = env.rfs(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "-u",
        "root",
        "--restart",
        "on-failure:2",
        &bb,
        failing,
    ]);
    assert_code(&out, 0);
    let start = Instant::now();
    while text(&env.rfs(&["logs", "flaky"])).lines().count() < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "no third try");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The third try is the last.
    let start = Instant::now();
    while text(&env.rfs(&["ps"])).contains(" flaky ") {
        assert!(start.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(text(&env.rfs(&["logs", "flaky"])), "1\n2\n3\n");
    assert_eq!(text(&env.rfs(&["wait", "flaky"])), "3\n");
    let bad = env.rfs(&["run", "-d", "--restart", "always", &bb, "true"]);
    assert_code(&bad, 125);
}

both_ways!(start_and_restart: start_and_restart_as_root, start_and_restart_rootless);

/// `rfs cp` of a running container goes through its own mount, by a process that joined it:
/// through the container's symlink to `/etc` the container's `/etc` is read and written (never
/// the host's), a directory's contents go in with `DIR/.`, and the running container sees at
/// once what came in.
fn cp_running(env: &Env, images: &Path) {
    let shared_dir = SharedDir::new(env, images, "cp-live");
    let host = shared_dir.0.clone();
    std::fs::create_dir_all(host.join("site/css")).unwrap();
    std::fs::write(host.join("site/css/a.css"), "body{}").unwrap();
    std::fs::write(host.join("site/index.html"), "<p>hi</p>").unwrap();
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rwX")
        .arg(&host)
        .status();
    let hs = |p: &str| host.join(p).to_str().unwrap().to_owned();

    let bb = env.busybox.to_string_lossy().into_owned();
    let script = "ln -s /etc /escape; mkdir /srv; touch /ready; while :; do sleep 0.2; done";
    assert_code(
        &env.rfs(&["run", "-d", "--name", "live", "-u", "root", &bb, script]),
        0,
    );
    let start = Instant::now();
    while env
        .rfs(&["exec", "live", "test", "-f", "/ready"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the container never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_code(&env.rfs(&["cp", "live:/escape/passwd", &hs("")]), 0);
    let passwd = std::fs::read_to_string(host.join("passwd")).unwrap();
    assert!(
        passwd.contains("app:x:1000:1000:app:/home/app:/bin/sh"),
        "{passwd}"
    );

    assert_code(
        &env.rfs(&["cp", &format!("{}/.", hs("site")), "live:/srv"]),
        0,
    );
    let seen = env.rfs(&["exec", "live", "cat", "/srv/index.html", "/srv/css/a.css"]);
    assert_eq!(text(&seen), "<p>hi</p>body{}");
    let name = format!("rfs-cp-live-{}", std::process::id());
    std::fs::write(host.join(&name), "live\n").unwrap();
    let _ = Command::new("chmod")
        .arg("a+r")
        .arg(host.join(&name))
        .status();
    assert_code(&env.rfs(&["cp", &hs(&name), "live:/escape/"]), 0);
    assert!(
        !Path::new("/etc").join(&name).exists(),
        "written into the host's /etc"
    );
    let owner = env.rfs(&[
        "exec",
        "live",
        "stat",
        "-c",
        "%u %s",
        &format!("/etc/{name}"),
    ]);
    assert_eq!(
        text(&owner),
        "0 5\n",
        "the container root's, as docker cp makes it"
    );
    let missing = env.rfs(&["cp", "live:/no/such", &hs("")]);
    assert_code(&missing, 1);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such"));
    assert_code(&env.rfs(&["stop", "-t", "1", "live"]), 0);
}

both_ways!(
    cp_running, images:
    cp_as_root_copies_into_a_running_container,
    cp_rootless_copies_into_a_running_container
);

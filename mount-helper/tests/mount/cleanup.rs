//! Nothing is left behind (issue 13): a signal to `rfs mount` while a process works inside
//! the mount detaches it lazily instead of leaving a dead mount; a dead mount is named, and
//! `rfs umount` clears it; the fresh writable layers of `rfs mount` are listed
//! (`rfs mounts`), deleted on request (`rfs umount --rm`, `rfs mount --rm`,
//! `rfs prune --mounts`) and never otherwise, and a failed mount leaves none.
//!
//! Everything goes through the built `rfs` and real FUSE mounts. Every process a test starts
//! is held by a guard that kills it on drop; every mount by a guard that unmounts it.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::{Daemon, MountGuard, Scratch, is_mounted, rfs_bin};

const DETACHED: &str = "is busy; detached it lazily, it goes away when the last user leaves";

/// A scratch dir with an rfs root, a lower dir holding `f` ("hi\n"), and mountpoints.
struct Env {
    s: Scratch,
    root: PathBuf,
    lower: PathBuf,
}

impl Env {
    fn new() -> Env {
        let s = Scratch::new();
        let root = s.mkdir("root");
        let lower = s.mkdir("lower");
        std::fs::write(lower.join("f"), "hi\n").unwrap();
        Env { s, root, lower }
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut c = Command::new(rfs_bin());
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    fn run(&self, args: &[&OsStr]) -> Output {
        self.command(args).output().expect("running rfs")
    }

    /// `rfs mount [extra] --lower LOWER MNT` as a daemon.
    fn mount(&self, mnt: &Path, extra: &[&str]) -> MountGuard {
        let mut args: Vec<&OsStr> = vec!["--root".as_ref(), self.root.as_os_str()];
        args.push("mount".as_ref());
        args.extend(extra.iter().map(OsStr::new));
        args.extend(["--lower".as_ref(), self.lower.as_os_str()]);
        MountGuard::rfs(&args, mnt).unwrap_or_else(|e| panic!("rfs mount: {e}"))
    }

    /// `rfs mount -f [extra] --lower LOWER MNT`, its stderr going to the returned file.
    fn foreground(&self, mnt: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
        let log = self.s.dir.path().join(format!(
            "stderr-{}",
            mnt.file_name().unwrap().to_string_lossy()
        ));
        let mut cmd = Command::new(rfs_bin());
        cmd.arg("--root")
            .arg(&self.root)
            .args(["mount", "-f"])
            .args(extra)
            .arg("--lower")
            .arg(&self.lower)
            .arg(mnt)
            .stderr(std::fs::File::create(&log).unwrap());
        (Daemon::spawn(cmd, mnt), log)
    }

    /// The layers `rfs mounts --format json` lists.
    fn layers(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["mounts".as_ref(), "--format".as_ref(), "json".as_ref()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
            .collect()
    }

    /// The one layer `rfs mounts` lists for `mnt`.
    fn layer_of(&self, mnt: &Path) -> serde_json::Value {
        let canon = std::fs::canonicalize(mnt).unwrap();
        let mut found: Vec<_> = self
            .layers()
            .into_iter()
            .filter(|l| l["Mountpoint"] == canon.to_str().unwrap())
            .collect();
        assert_eq!(found.len(), 1, "layers of {}: {found:?}", mnt.display());
        found.remove(0)
    }

    /// The entries of `root/mounts/`.
    fn layer_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("mounts"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Writes `len` zero bytes to `path` from a child process. Files a test opens itself inside
/// a mount can be inherited, for the instant between fork and exec, by a process another
/// test thread starts, which makes the mount briefly busy; a child's files cannot.
fn fill(path: &Path, len: usize) {
    let st = Command::new("sh")
        .args(["-c", "head -c \"$0\" /dev/zero > \"$1\"", &len.to_string()])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "writing {}", path.display());
}

/// A copy of rfs in `dir` that the test user can run.
fn user_copy_of_rfs(dir: &Path) -> PathBuf {
    crate::common::copy_of_rfs(&dir.join("rfs"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A process killed (SIGKILL) and reaped on drop.
struct Proc(Option<Child>);

impl Proc {
    /// `sh -c SCRIPT` in `dir`.
    fn shell_in(dir: &Path, script: &str) -> Proc {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]).current_dir(dir);
        Proc::spawn(cmd)
    }

    /// Starts `cmd` with stdin, stdout and stderr piped.
    fn spawn(mut cmd: Command) -> Proc {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning a child");
        Proc(Some(child))
    }

    /// Sends `line` to its stdin and closes it, then waits for it to exit.
    fn finish(mut self, line: &str) -> Output {
        let mut child = self.0.take().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits up to `secs` for `done`, else panics naming `what`.
fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to 10 s for `child` to exit.
fn exit_of(child: &mut Child) -> ExitStatus {
    let mut status = None;
    wait_for("rfs to exit", 10, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn ctrl_c_with_a_process_inside_detaches_lazily_serves_it_and_exits_0() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let (mut rfs, log) = env.foreground(&mnt, &[]);
    // A shell whose working directory is the mount, waiting for a line before it reads.
    let user = Proc::shell_in(&mnt, "read _; cat f; echo new > g; cat g");
    signal(&rfs.child, Signal::SIGINT);
    wait_for("the busy mount to be detached", 10, || !is_mounted(&mnt));
    wait_for("rfs to say it detached", 10, || {
        std::fs::read_to_string(&log).unwrap().contains(DETACHED)
    });
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains(&format!("rfs: {} {DETACHED}", mnt.display())),
        "stderr: {err}"
    );
    assert!(!err.contains("os error 16"), "stderr: {err}");
    // The mountpoint is free at once: a new mount there works and shows the same lower.
    let again = env.mount(&mnt, &["--read-only"]);
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "hi\n");
    // The process inside is still served, reads and writes included.
    assert!(
        rfs.child.try_wait().unwrap().is_none(),
        "rfs stopped serving"
    );
    let out = user.finish("\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\nnew\n");
    // It went, so does the mount, and rfs exits 0.
    let status = exit_of(&mut rfs.child);
    assert!(status.success(), "rfs exited with {status}; stderr: {err}");
    assert!(is_mounted(&mnt), "the old daemon left the new mount alone");
    again.unmount().unwrap();
    // The writable layer it made is kept (no --rm), with what the process wrote.
    let layer = env.layer_of(&mnt);
    assert_eq!(layer["Status"], "not mounted");
    let upper = PathBuf::from(layer["Upper"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(upper.join("g")).unwrap(), "new\n");
}

#[test]
fn a_second_signal_stops_serving_a_detached_mount() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let (mut rfs, log) = env.foreground(&mnt, &[]);
    let _user = Proc::shell_in(&mnt, "read _");
    signal(&rfs.child, Signal::SIGTERM);
    wait_for("rfs to say it detached", 10, || {
        std::fs::read_to_string(&log).unwrap().contains(DETACHED)
    });
    signal(&rfs.child, Signal::SIGHUP);
    let status = exit_of(&mut rfs.child);
    assert!(status.success(), "rfs exited with {status}");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("stopped serving"), "stderr: {err}");
    assert!(!is_mounted(&mnt), "nothing is left mounted");
}

#[test]
fn sigterm_to_a_daemon_with_a_process_inside_detaches_lazily() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let guard = env.mount(&mnt, &["--rm"]);
    let layer = env.layer_of(&mnt);
    assert_eq!(layer["Status"], "mounted");
    let pid = i32::try_from(layer["Pid"].as_u64().unwrap()).unwrap();
    let upper = PathBuf::from(layer["Upper"].as_str().unwrap());
    let user = Proc::shell_in(&mnt, "read _; cat f");
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    wait_for("the busy mount to be detached", 10, || !is_mounted(&mnt));
    assert!(alive(pid), "the daemon must serve the process still inside");
    assert!(
        upper.is_dir(),
        "--rm: the layer goes only when the mount does"
    );
    let out = user.finish("\n");
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    wait_for("the daemon to exit", 10, || !alive(pid));
    // --rm: deleted when the mount ended through a signal.
    assert!(!upper.exists());
    assert_eq!(env.layer_dirs(), Vec::<String>::new());
    drop(guard);
}

#[test]
fn a_dead_mount_is_named_and_rfs_umount_clears_it() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let (mut rfs, _log) = env.foreground(&mnt, &[]);
    let _ = rfs.child.kill();
    let _ = rfs.child.wait();
    let dead = std::fs::metadata(&mnt).unwrap_err();
    // ENOTCONN, or ECONNABORTED for a request under way when the kernel aborted.
    assert!(
        matches!(
            dead.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "a dead mount: {dead}"
    );
    let layers_before = env.layer_dirs();
    // `rfs mount` there fails, saying what is there and what clears it.
    let mut args: Vec<&OsStr> = vec!["mount".as_ref(), "--lower".as_ref()];
    args.extend([env.lower.as_os_str(), mnt.as_os_str()]);
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("a dead mount is there")
            && err.contains(&format!("`rfs umount {}` clears it", mnt.display())),
        "stderr: {err}"
    );
    assert_eq!(
        env.layer_dirs(),
        layers_before,
        "the failed mount made no layer"
    );
    // `rfs umount` clears it, and the mountpoint is usable again.
    let out = env.run(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!is_mounted(&mnt));
    let _guard = env.mount(&mnt, &[]);
    assert_eq!(std::fs::read_to_string(mnt.join("f")).unwrap(), "hi\n");
}

#[test]
fn umount_rm_of_a_dead_mount_clears_it_and_deletes_its_layer() {
    let env = Env::new();
    let (mnt, other) = (env.s.mkdir("mnt"), env.s.mkdir("other"));
    // A kept layer of an earlier mount at the same place must survive.
    let first = env.mount(&mnt, &[]);
    let out = env.run(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(first);
    let kept = env.layer_dirs();
    assert_eq!(kept.len(), 1);
    // `rfs mount` returns once the daemon has recorded the mount.
    let _dead = env.mount(&mnt, &[]);
    fill(&mnt.join("written"), 1);
    let pid = env.layers()[0]["Pid"].as_u64().unwrap();
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    wait_for("the daemon to die", 10, || !alive(pid as i32));
    let dead = std::fs::metadata(&mnt).unwrap_err();
    // ENOTCONN, or ECONNABORTED for a request under way when the kernel aborted.
    assert!(
        matches!(
            dead.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "a dead mount: {dead}"
    );
    let _busy = env.mount(&other, &[]);
    assert_eq!(env.layer_dirs().len(), 3);
    let out = env.run(&["umount".as_ref(), "--rm".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!is_mounted(&mnt));
    let left = env.layer_dirs();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&kept[0]), "the earlier layer stays: {left:?}");
    assert_eq!(env.layer_of(&other)["Status"], "mounted");
}

#[test]
fn root_umount_of_a_busy_mount_says_it_detached_lazily() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let _guard = env.mount(&mnt, &[]);
    let user = Proc::shell_in(&mnt, "read _; cat f");
    let out = env.run(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!("rfs: {} {DETACHED}\n", mnt.display())
    );
    assert!(!is_mounted(&mnt));
    assert_eq!(text(&user.finish("\n").stdout), "hi\n");
    // An idle mount unmounts without a word.
    let _again = env.mount(&mnt, &["--read-only"]);
    let out = env.run(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_failed_mount_leaves_no_layer() {
    let (uid, gid, s) = crate::rootless::user_and_scratch();
    // The user may make a layer in its root, but may not mount on a directory of root's:
    // fusermount3 refuses once the layer exists.
    let (root, lower, mnt) = (s.mkdir("root"), s.mkdir("lower"), s.mkdir("mnt"));
    for d in [&root, &lower] {
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let bin = user_copy_of_rfs(s.dir.path());
    let out = Command::new(&bin)
        .arg("--root")
        .arg(&root)
        .args(["mount", "--lower"])
        .arg(&lower)
        .arg(&mnt)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    if is_mounted(&mnt) {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("fusermount3"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(root.join("mounts"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn rfs_mounts_lists_layers_and_prune_mounts_deletes_the_unmounted_ones() {
    let env = Env::new();
    let (m1, m2) = (env.s.mkdir("m1"), env.s.mkdir("m2"));
    let busy = env.mount(&m1, &[]);
    fill(&m1.join("data"), 5000);
    let _idle = env.mount(&m2, &[]);
    fill(&m2.join("data"), 3000);
    // `rfs umount` returns once the daemon has let go of the layer.
    let out = env.run(&["umount".as_ref(), m2.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A layer of an older rfs: no record, and the pid its id names is gone.
    let old = env.root.join("mounts/1700000000-2147483646");
    std::fs::create_dir_all(old.join("upper")).unwrap();
    std::fs::create_dir_all(old.join("work")).unwrap();
    std::fs::write(old.join("upper/x"), "old").unwrap();

    let out = env.run(&["mounts".as_ref()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines = crate::common::table_rows(&table);
    assert_eq!(
        lines[0],
        ["ID", "SOURCE", "MOUNTPOINT", "STATUS", "SIZE", "CREATED"],
        "{table}"
    );
    let row = |mnt: &str| {
        lines
            .iter()
            .find(|r| r.get(2) == Some(&mnt))
            .unwrap_or_else(|| panic!("no row for {mnt}:\n{table}"))
            .clone()
    };
    let (canon1, canon2) = (
        std::fs::canonicalize(&m1).unwrap(),
        std::fs::canonicalize(&m2).unwrap(),
    );
    let lower = std::fs::canonicalize(&env.lower).unwrap();
    let r1 = row(canon1.to_str().unwrap());
    assert_eq!(
        &r1[1..5],
        [
            lower.to_str().unwrap(),
            canon1.to_str().unwrap(),
            "mounted",
            "5kB"
        ]
    );
    let r2 = row(canon2.to_str().unwrap());
    assert_eq!(&r2[3..5], ["not mounted", "3kB"]);
    let r3 = row("-");
    assert_eq!(
        &r3[..5],
        ["1700000000-2147483646", "-", "-", "not mounted", "3B"]
    );
    assert!(r3[5].ends_with(" ago"), "created from the id: {table}");
    assert_eq!(lines.len(), 4, "{table}");

    // Plain prune keeps them all.
    let out = env.run(&["prune".as_ref()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.layer_dirs().len(), 3);

    let id2 = env.layer_of(&m2)["ID"].as_str().unwrap().to_owned();
    let out = env.run(&["prune".as_ref(), "--mounts".as_ref()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!("deleted: {id2} ({}, 3kB)", canon2.display()))
            && report.contains("deleted: 1700000000-2147483646 (-, 3B)")
            && report.contains("Total reclaimed space: 3kB"),
        "{report}"
    );
    // The mounted one stays, and its mount still works.
    let left = env.layers();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["Status"], "mounted");
    assert_eq!(std::fs::read(m1.join("data")).unwrap().len(), 5000);
    drop(busy);
}

#[test]
fn umount_rm_deletes_the_fresh_layer_and_refuses_a_given_upper() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let guard = env.mount(&mnt, &[]);
    fill(&mnt.join("data"), 1);
    let upper = PathBuf::from(env.layer_of(&mnt)["Upper"].as_str().unwrap());
    assert!(upper.join("data").is_file());
    let out = env.run(&["umount".as_ref(), "--rm".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!is_mounted(&mnt));
    assert!(!upper.exists() && env.layers().is_empty());
    drop(guard);

    // Not mounted any more: said so, with where the kept layers are.
    let out = env.run(&["umount".as_ref(), "--rm".as_ref(), mnt.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not mounted"),
        "{}",
        text(&out.stderr)
    );

    // A layer the user gave is never deleted, and the mount stays.
    let (up, work) = (env.s.mkdir("up"), env.s.mkdir("work"));
    std::fs::write(up.join("mine"), "keep").unwrap();
    let _given = MountGuard::rfs_dirs(&env.lower, &up, &work, &mnt);
    let out = env.run(&["umount".as_ref(), "--rm".as_ref(), mnt.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("rfs never deletes a layer it was given")
            && err.contains(&format!("`rfs umount {}`", mnt.display())),
        "stderr: {err}"
    );
    assert!(is_mounted(&mnt));
    assert_eq!(std::fs::read_to_string(up.join("mine")).unwrap(), "keep");
    // `rfs mount --rm` with a given upper is refused before anything happens.
    let other = env.s.mkdir("other");
    let out = env.run(&[
        "mount".as_ref(),
        "--rm".as_ref(),
        "--lower".as_ref(),
        env.lower.as_os_str(),
        "--upper".as_ref(),
        up.as_os_str(),
        "--work".as_ref(),
        work.as_os_str(),
        other.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!is_mounted(&other));
}

#[test]
fn mount_rm_deletes_the_layer_however_the_mount_ends() {
    let env = Env::new();
    let mnt = env.s.mkdir("mnt");
    let gone = |how: &str| {
        wait_for(&format!("the layer to go after {how}"), 10, || {
            env.layer_dirs().is_empty()
        });
    };
    for how in ["rfs umount", "fusermount3 -u"] {
        let guard = env.mount(&mnt, &["--rm"]);
        fill(&mnt.join("data"), 1);
        assert_eq!(env.layer_dirs().len(), 1);
        let out = match how {
            "rfs umount" => env.command(&["umount".as_ref(), mnt.as_os_str()]).output(),
            _ => Command::new("fusermount3").arg("-u").arg(&mnt).output(),
        }
        .unwrap();
        assert!(out.status.success(), "{how}: {}", text(&out.stderr));
        gone(how);
        drop(guard);
    }
    let (mut rfs, log) = env.foreground(&mnt, &["--rm"]);
    fill(&mnt.join("data"), 1);
    assert_eq!(env.layer_dirs().len(), 1);
    signal(&rfs.child, Signal::SIGINT);
    assert!(exit_of(&mut rfs.child).success());
    assert!(env.layer_dirs().is_empty());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("deleted at unmount: --rm") && err.contains("rfs: deleted the writable layer"),
        "stderr: {err}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn rootless_ctrl_c_with_a_process_inside_detaches_lazily() {
    let (uid, gid, s) = crate::rootless::user_and_scratch();
    let (root, lower, mnt) = (s.mkdir("root"), s.mkdir("lower"), s.mkdir("mnt"));
    std::fs::write(lower.join("f"), "hi\n").unwrap();
    for d in [&root, &lower, &mnt] {
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let bin = user_copy_of_rfs(s.dir.path());
    let log = s.dir.path().join("stderr");
    let mut cmd = Command::new(&bin);
    cmd.arg("--root")
        .arg(&root)
        .args(["mount", "-f", "--lower"])
        .arg(&lower)
        .arg(&mnt)
        .uid(uid)
        .gid(gid)
        .stderr(std::fs::File::create(&log).unwrap());
    let mut rfs = Daemon::spawn(cmd, &mnt);
    // Only the mounting user may enter a rootless mount.
    let mut sh = Command::new("sh");
    sh.args(["-c", "read _; cat f"])
        .current_dir(&mnt)
        .uid(uid)
        .gid(gid);
    let user = Proc::spawn(sh);
    signal(&rfs.child, Signal::SIGINT);
    wait_for("the busy mount to be detached", 10, || !is_mounted(&mnt));
    wait_for("rfs to say it detached", 10, || {
        std::fs::read_to_string(&log).unwrap().contains(DETACHED)
    });
    assert_eq!(text(&user.finish("\n").stdout), "hi\n");
    let status = exit_of(&mut rfs.child);
    assert!(
        status.success(),
        "rfs exited with {status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}

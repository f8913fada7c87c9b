//! An upper stacked as a lower (DESIGN §1, issue 14): a renamed directory's
//! `overlay.redirect` is followed in a directory lower when it is in the xattr namespace of
//! the mount's markers, `trusted.overlay.*` as root, `user.overlay.*` without root or with
//! `--userxattr` (kernel overlayfs `userxattr`), and only then.

use std::path::{Path, PathBuf};

use crate::common::{MountGuard, Scratch, copy_of_rfs, is_mounted};
use crate::differential::xattr;
use crate::rootless::{UserMount, as_user, chown_tree, user_and_scratch};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A fresh dir `name` owned by `(uid, gid)`.
fn owned(s: &Scratch, name: &str, (uid, gid): (u32, u32)) -> PathBuf {
    let p = s.mkdir(name);
    chown_tree(&p, uid, gid);
    p
}

/// Fresh upper, work and mountpoint dirs named after `tag`, owned by `owner` if given.
fn dirs(s: &Scratch, tag: &str, owner: Option<(u32, u32)>) -> (PathBuf, PathBuf, PathBuf) {
    let d = (
        s.mkdir(&format!("{tag}-upper")),
        s.mkdir(&format!("{tag}-work")),
        s.mkdir(&format!("{tag}-mnt")),
    );
    if let Some((uid, gid)) = owner {
        for p in [&d.0, &d.1, &d.2] {
            chown_tree(p, uid, gid);
        }
    }
    d
}

/// What directory `e` shows when `lowerdir` is mounted by root with a fresh upper and
/// `extra` options (`d` must be gone: whited out in the stacked upper), and the namespace
/// (`trusted` or `user`) of the redirect the mount writes when `e` is renamed to `f`.
fn stacked_as_root(
    s: &Scratch,
    tag: &str,
    lowerdir: &str,
    extra: &[&str],
) -> (Vec<String>, &'static str) {
    let (u, w, m) = dirs(s, tag, None);
    let g = MountGuard::rfs_dirs_with(Path::new(lowerdir), &u, &w, &m, extra);
    assert!(!m.join("d").exists(), "{tag}: d was renamed away");
    let seen = names(&m.join("e"));
    std::fs::rename(m.join("e"), m.join("f")).unwrap();
    assert_eq!(names(&m.join("f")), seen, "{tag}: renamed again");
    g.unmount().expect("unmount");
    let f = u.join("f");
    let ns = match (
        xattr::get(&f, "trusted.overlay.redirect").unwrap(),
        xattr::get(&f, "user.overlay.redirect").unwrap(),
    ) {
        (Some(_), None) => "trusted",
        (None, Some(_)) => "user",
        other => panic!("{tag}: redirects of the renamed dir: {other:?}"),
    };
    (seen, ns)
}

#[test]
fn an_upper_stacks_as_a_lower_in_the_namespace_of_the_mounts_markers() {
    let (uid, gid, s) = user_and_scratch();
    let lower = s.mkdir("lower");
    std::fs::create_dir(lower.join("d")).unwrap();
    std::fs::write(lower.join("d/a"), "a").unwrap();
    chown_tree(&lower, uid, gid);
    let bin = copy_of_rfs(&s.dir.path().join("rfs"));

    // Root writes an upper: `d` renamed to `e` (trusted.overlay.redirect).
    let (root_upper, w, m) = dirs(&s, "root", None);
    let g = MountGuard::rfs_dirs(&lower, &root_upper, &w, &m);
    std::fs::rename(m.join("d"), m.join("e")).unwrap();
    g.unmount().expect("unmount");
    let e = root_upper.join("e");
    assert_eq!(
        xattr::get(&e, "trusted.overlay.redirect")
            .unwrap()
            .as_deref(),
        Some(&b"/d"[..])
    );
    assert_eq!(xattr::get(&e, "user.overlay.redirect").unwrap(), None);

    // The user writes another without root (user.overlay.redirect).
    let (user_upper, uw, um) = dirs(&s, "user", Some((uid, gid)));
    let guard = UserMount(um.clone());
    let (ok, out) = as_user(&format!(
        "set -e; '{}' mount --root '{}' --lower '{}' --upper '{}' --work '{}' '{m}'; \
         mv '{m}/d' '{m}/e'; fusermount3 -u '{m}'",
        bin.display(),
        owned(&s, "user-root", (uid, gid)).display(),
        lower.display(),
        user_upper.display(),
        uw.display(),
        m = um.display()
    ));
    assert!(ok, "rootless mount and rename: {out}");
    drop(guard);
    let e = user_upper.join("e");
    assert_eq!(
        xattr::get(&e, "user.overlay.redirect").unwrap().as_deref(),
        Some(&b"/d"[..])
    );
    assert_eq!(xattr::get(&e, "trusted.overlay.redirect").unwrap(), None);

    // Stacked under root: each redirect is followed in its own namespace only, as kernel
    // overlayfs follows `trusted.overlay.*`, or `user.overlay.*` with `userxattr`.
    let root_stack = format!("{}:{}", root_upper.display(), lower.display());
    let user_stack = format!("{}:{}", user_upper.display(), lower.display());
    // The mount writes its own markers in that same namespace.
    let a = vec!["a".to_string()];
    let none: Vec<String> = Vec::new();
    let user = ["--userxattr"];
    assert_eq!(
        stacked_as_root(&s, "s1", &root_stack, &[]),
        (a.clone(), "trusted")
    );
    assert_eq!(
        stacked_as_root(&s, "s2", &root_stack, &user),
        (none.clone(), "user")
    );
    assert_eq!(
        stacked_as_root(&s, "s3", &user_stack, &[]),
        (none, "trusted")
    );
    assert_eq!(stacked_as_root(&s, "s4", &user_stack, &user), (a, "user"));

    // Stacked without root: user.overlay.* is the mount's namespace.
    let (u, w, m) = dirs(&s, "s5", Some((uid, gid)));
    let guard = UserMount(m.clone());
    let (ok, out) = as_user(&format!(
        "set -e; '{}' mount --root '{}' --lower '{user_stack}' --upper '{}' --work '{}' '{m}'; \
         ls -A '{m}/e'; test ! -e '{m}/d'; fusermount3 -u '{m}'",
        bin.display(),
        owned(&s, "user-root2", (uid, gid)).display(),
        u.display(),
        w.display(),
        m = m.display()
    ));
    assert!(ok, "rootless stacked mount: {out}");
    assert_eq!(out.trim(), "a");
    assert!(!is_mounted(&m));
    drop(guard);
}

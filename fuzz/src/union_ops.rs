//! The `union_ops` check: an operation sequence decoded from fuzz input drives the union
//! engine in-process (no mount) over a directory lower layer and an upper, next to a small
//! reference model of overlay semantics (a map from path to file contents or directory).
//! Every operation must succeed or fail as the model says, and after every operation the
//! merged view — walked with `opendir`/`readdir`/`lookup`/`read` — must equal the model.
//! The check counts the kernel references its lookups, creates and mkdirs take; one operation
//! (and the end of the input) returns them all, after which only the root inode may be left.
//!
//! Shared with `fs/tests/union_ops.rs` (with `#[path]`), which replays fixed inputs on the
//! stable toolchain. Depends on `rfs-fs`, `libc` and `tempfile` only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use rfs_fs::lower::{FileKind, LayerInput, LowerTree};
use rfs_fs::union::{Caller, ROOT_INO, SetAttr, UnionFs, UpperDirs, Writer};

/// A model entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// Names the operations pick from (some exist in the lower layer, some do not).
const NAMES: [&str; 10] = ["a", "b", "c", "x", "f", "d1", "d2", "sub", "n1", "n2"];

/// Most operations decoded from one input.
const MAX_OPS: usize = 64;

fn build_lower(dir: &Path) -> BTreeMap<String, Node> {
    let mut model = BTreeMap::new();
    for d in ["d1", "d1/sub", "d2"] {
        std::fs::create_dir_all(dir.join(d)).expect("lower dir");
        model.insert(d.to_string(), Node::Dir);
    }
    for (f, data) in [
        ("d1/a", "lower a"),
        ("d1/b", "lower b"),
        ("d1/sub/c", "lower c"),
        ("d2/x", "lower x"),
        ("f", "lower f"),
    ] {
        std::fs::write(dir.join(f), data).expect("lower file");
        model.insert(f.to_string(), Node::File(data.as_bytes().to_vec()));
    }
    model
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The kernel's references, as the kernel would hold them: one per successful lookup,
/// create or mkdir, returned by `forget` (the "drop caches" operation).
type Refs = RefCell<BTreeMap<u64, u64>>;

fn counted(refs: &Refs, ino: u64) -> u64 {
    *refs.borrow_mut().entry(ino).or_insert(0) += 1;
    ino
}

/// Looks `name` up in `parent` and counts the reference.
fn lookup(fs: &UnionFs, refs: &Refs, parent: u64, name: &str) -> Result<rfs_fs::union::Attr, i32> {
    let attr = fs.lookup(parent, OsStr::new(name)).map_err(|e| e.errno())?;
    counted(refs, attr.ino);
    Ok(attr)
}

/// The inode of `path` in the union (looked up component by component).
fn ino_of(fs: &UnionFs, refs: &Refs, path: &str) -> Result<u64, i32> {
    let mut ino = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = lookup(fs, refs, ino, c)?.ino;
    }
    Ok(ino)
}

/// Returns every reference, as the kernel does when it drops its caches: afterwards the
/// engine must hold no inode but the root's.
fn forget_all(fs: &UnionFs, refs: &Refs) {
    for (ino, n) in std::mem::take(&mut *refs.borrow_mut()) {
        fs.forget(ino, n);
    }
    assert_eq!(
        fs.inode_count(),
        1,
        "inodes left after every reference was returned"
    );
}

/// The merged view as a model, walked through the union's own API.
fn merged_view(fs: &UnionFs, refs: &Refs) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    while let Some((path, ino)) = stack.pop() {
        let fh = fs.opendir(ino).expect("opendir");
        let entries = fs.readdir(fh).expect("readdir");
        fs.release(fh);
        // The handle-less listing (the kernel skipping OPENDIR) is the same listing, and
        // a read at a later offset continues in the snapshot taken at offset 0.
        let by_inode = fs.listing_at(ino, 0).expect("listing_at 0");
        assert_eq!(by_inode, entries, "listing_at differs from opendir/readdir");
        let again = fs.listing_at(ino, 1).expect("listing_at 1");
        assert!(
            Arc::ptr_eq(&by_inode, &again),
            "offset 1 took a new snapshot"
        );
        fs.done_reading_dir(ino);
        for e in entries.iter() {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let name = String::from_utf8(e.name.clone()).expect("utf-8 name");
            let child = join(&path, &name);
            let attr = lookup(fs, refs, ino, &name).expect("lookup of a listed name");
            assert_eq!(
                attr.ino, e.ino,
                "{child}: readdir d_ino differs from lookup st_ino"
            );
            match attr.kind {
                FileKind::Dir => {
                    out.insert(child.clone(), Node::Dir);
                    stack.push((child, attr.ino));
                }
                FileKind::File => {
                    let fh = fs
                        .open(attr.ino, libc::O_RDONLY, Caller::ROOT)
                        .expect("open")
                        .fh;
                    let data = fs.read(fh, 0, 1 << 16).expect("read");
                    fs.release(fh);
                    assert_eq!(data.len() as u64, attr.size, "{child}: size");
                    out.insert(child, Node::File(data));
                }
                other => panic!("{child}: unexpected kind {other:?}"),
            }
        }
    }
    out
}

/// Runs the operations `data` encodes; panics on any divergence from the model.
pub fn union_ops(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work) = (
        tmp.path().join("lower"),
        tmp.path().join("upper"),
        tmp.path().join("work"),
    );
    for d in [&lower, &upper, &work] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let mut model = build_lower(&lower);
    let tree = LowerTree::build(vec![LayerInput::Dir(lower.clone())]).expect("lower tree");
    let fs = UnionFs::new(tree, Some(UpperDirs { upper, work })).expect("union");
    let caller = Caller::ROOT;
    let refs = Refs::default();
    let mut log: Vec<String> = Vec::new();
    for chunk in data.chunks_exact(5).take(MAX_OPS) {
        let dirs: Vec<String> = std::iter::once(String::new())
            .chain(
                model
                    .iter()
                    .filter(|(_, n)| **n == Node::Dir)
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let dir = dirs[usize::from(chunk[1]) % dirs.len()].clone();
        let name = NAMES[usize::from(chunk[2]) % NAMES.len()];
        let path = join(&dir, name);
        let pino = ino_of(&fs, &refs, &dir).expect("parent exists");
        // The kernel looks a name up before it changes it (a miss is a negative entry).
        let _ = lookup(&fs, &refs, pino, name);
        let existing = model.get(&path).cloned();
        let errno = |r: Result<(), rfs_fs::Error>| r.map_err(|e| e.errno());
        let (op, result, expected): (String, Result<(), i32>, Result<(), i32>) = match chunk[0] % 8
        {
            7 => {
                forget_all(&fs, &refs);
                ("forget all".to_string(), Ok(()), Ok(()))
            }
            0 => {
                let r = fs
                    .create(pino, OsStr::new(name), 0o644, libc::O_RDWR, caller)
                    .map(|(attr, fh)| {
                        counted(&refs, attr.ino);
                        fs.release(fh);
                    });
                let want = match existing {
                    Some(_) => Err(libc::EEXIST),
                    None => {
                        model.insert(path.clone(), Node::File(Vec::new()));
                        Ok(())
                    }
                };
                (format!("create {path}"), errno(r), want)
            }
            1 => {
                let Some(Node::File(mut content)) = existing else {
                    continue;
                };
                let ino = ino_of(&fs, &refs, &path).expect("file exists");
                let fh = fs
                    .open(ino, libc::O_RDWR, Caller::ROOT)
                    .expect("open for write")
                    .fh;
                let r = fs
                    .write(fh, content.len() as u64, &chunk[3..5], Writer::default())
                    .map(|_| ());
                fs.release(fh);
                content.extend_from_slice(&chunk[3..5]);
                model.insert(path.clone(), Node::File(content));
                (format!("append {path}"), errno(r), Ok(()))
            }
            2 => {
                let r = fs.unlink(pino, OsStr::new(name));
                let want = match existing {
                    None => Err(libc::ENOENT),
                    Some(Node::Dir) => Err(libc::EISDIR),
                    Some(Node::File(_)) => {
                        model.remove(&path);
                        Ok(())
                    }
                };
                (format!("unlink {path}"), errno(r), want)
            }
            3 => {
                let r = fs.mkdir(pino, OsStr::new(name), 0o755, caller).map(|attr| {
                    counted(&refs, attr.ino);
                });
                let want = match existing {
                    Some(_) => Err(libc::EEXIST),
                    None => {
                        model.insert(path.clone(), Node::Dir);
                        Ok(())
                    }
                };
                (format!("mkdir {path}"), errno(r), want)
            }
            4 => {
                let r = fs.rmdir(pino, OsStr::new(name));
                let prefix = format!("{path}/");
                let want = match existing {
                    None => Err(libc::ENOENT),
                    Some(Node::File(_)) => Err(libc::ENOTDIR),
                    Some(Node::Dir) if model.keys().any(|k| k.starts_with(&prefix)) => {
                        Err(libc::ENOTEMPTY)
                    }
                    Some(Node::Dir) => {
                        model.remove(&path);
                        Ok(())
                    }
                };
                (format!("rmdir {path}"), errno(r), want)
            }
            5 => {
                // Rename to an absent name in an existing directory, never into itself.
                let Some(_) = existing else { continue };
                let to_dir = dirs[usize::from(chunk[3]) % dirs.len()].clone();
                let to = join(&to_dir, NAMES[usize::from(chunk[4]) % NAMES.len()]);
                if model.contains_key(&to) || to == path || to.starts_with(&format!("{path}/")) {
                    continue;
                }
                let to_ino = ino_of(&fs, &refs, &to_dir).expect("target dir exists");
                let to_name = to.rsplit('/').next().unwrap_or(&to).to_string();
                let r = fs.rename(pino, OsStr::new(name), to_ino, OsStr::new(&to_name), 0);
                let prefix = format!("{path}/");
                let moved: Vec<(String, Node)> = model
                    .iter()
                    .filter(|(k, _)| **k == path || k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in moved {
                    model.remove(&k);
                    model.insert(format!("{to}{}", &k[path.len()..]), v);
                }
                (format!("rename {path} {to}"), errno(r), Ok(()))
            }
            _ => {
                let Some(Node::File(_)) = existing else {
                    continue;
                };
                let ino = ino_of(&fs, &refs, &path).expect("file exists");
                let set = SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                };
                let r = fs.setattr(ino, set, None, Caller::ROOT).map(|_| ());
                model.insert(path.clone(), Node::File(Vec::new()));
                (format!("truncate {path}"), errno(r), Ok(()))
            }
        };
        log.push(op.clone());
        assert_eq!(
            result, expected,
            "{op}: the engine and the model disagree (ops so far: {log:?})"
        );
        let view = merged_view(&fs, &refs);
        assert_eq!(
            view, model,
            "after {op}: merged view differs (ops: {log:?})"
        );
    }
    forget_all(&fs, &refs);
}

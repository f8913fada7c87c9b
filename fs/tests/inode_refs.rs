//! Kernel reference counting of the union engine: `lookup` and `forget` as the kernel sends
//! them, over entries that stay in their lower place (counted in a dense table, not as full
//! inodes) and entries that an operation changes while the kernel holds them.

use std::ffi::OsStr;

use rfs_fs::lower::{LayerInput, LowerTree};
use rfs_fs::union::{Caller, ROOT_INO, SetAttr, UnionFs, UpperDirs};

struct Fixture {
    _tmp: tempfile::TempDir,
    fs: UnionFs,
}

/// A lower layer `d/f0 .. d/f{n-1}`, `top`, and an empty upper.
fn fixture(files: usize) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lower = tmp.path().join("lower");
    std::fs::create_dir_all(lower.join("d")).expect("lower dir");
    for i in 0..files {
        std::fs::write(lower.join(format!("d/f{i}")), format!("data {i}")).expect("file");
    }
    std::fs::write(lower.join("top"), b"top").expect("file");
    let (upper, work) = (tmp.path().join("upper"), tmp.path().join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir(d).expect("upper dirs");
    }
    let tree = LowerTree::build(vec![LayerInput::Dir(lower)]).expect("lower tree");
    let fs = UnionFs::new(tree, Some(UpperDirs { upper, work })).expect("union");
    Fixture { _tmp: tmp, fs }
}

fn lookup(fs: &UnionFs, parent: u64, name: &str) -> u64 {
    fs.lookup(parent, OsStr::new(name)).expect("lookup").ino
}

fn chmod(fs: &UnionFs, ino: u64, mode: u32) -> rfs_fs::union::Attr {
    let set = SetAttr {
        mode: Some(mode),
        ..SetAttr::default()
    };
    fs.setattr(ino, set, None, Caller::ROOT).expect("chmod")
}

fn read_all(fs: &UnionFs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY, Caller::ROOT).expect("open").fh;
    let data = fs.read(fh, 0, 64).expect("read");
    fs.release(fh);
    data
}

#[test]
fn lookups_and_forgets_of_lower_entries_balance() {
    let f = fixture(50);
    let fs = &f.fs;
    assert_eq!(fs.inode_count(), 1, "only the root at first");
    let d = lookup(fs, ROOT_INO, "d");
    let files: Vec<u64> = (0..50).map(|i| lookup(fs, d, &format!("f{i}"))).collect();
    assert_eq!(fs.inode_count(), 52);
    // A second lookup of the same names adds references, not inodes.
    for (i, &ino) in files.iter().enumerate() {
        assert_eq!(lookup(fs, d, &format!("f{i}")), ino);
    }
    assert_eq!(fs.inode_count(), 52);
    // One forget of one reference each keeps them; the second drops them.
    for &ino in &files {
        fs.forget(ino, 1);
    }
    assert_eq!(fs.inode_count(), 52);
    assert_eq!(read_all(fs, files[7]), b"data 7");
    for &ino in &files {
        fs.forget(ino, 1);
    }
    assert_eq!(fs.inode_count(), 2, "root and d");
    assert!(fs.getattr(files[3]).is_err(), "a forgotten inode is gone");
    fs.forget(d, 1);
    assert_eq!(fs.inode_count(), 1);
}

#[test]
fn an_entry_changed_while_looked_up_keeps_its_references() {
    let f = fixture(3);
    let fs = &f.fs;
    let d = lookup(fs, ROOT_INO, "d");
    let f1 = lookup(fs, d, "f1");
    let again = lookup(fs, d, "f1");
    assert_eq!(f1, again);
    // chmod copies the file up while the kernel holds two references to it.
    let a = chmod(fs, f1, 0o600);
    assert_eq!(a.perm, 0o600);
    assert_eq!(a.ino, f1, "copy-up keeps the inode number");
    // A lookup after the copy-up counts on the same inode.
    assert_eq!(lookup(fs, d, "f1"), f1);
    assert_eq!(fs.getattr(f1).expect("getattr").perm, 0o600);
    assert_eq!(read_all(fs, f1), b"data 1");
    fs.forget(f1, 2);
    assert!(fs.getattr(f1).is_ok(), "one reference is left");
    fs.forget(f1, 1);
    assert!(fs.getattr(f1).is_err());
    assert_eq!(fs.inode_count(), 2, "root and d");
}

#[test]
fn a_renamed_lower_entry_is_found_under_its_new_name() {
    let f = fixture(2);
    let fs = &f.fs;
    let d = lookup(fs, ROOT_INO, "d");
    let f0 = lookup(fs, d, "f0");
    fs.rename(d, OsStr::new("f0"), ROOT_INO, OsStr::new("moved"), 0)
        .expect("rename");
    // The kernel keeps its reference to f0 across the rename; the engine must resolve the
    // inode at its new place, not at its lower one.
    assert_eq!(read_all(fs, f0), b"data 0");
    assert_eq!(lookup(fs, ROOT_INO, "moved"), f0);
    assert!(
        fs.lookup(d, OsStr::new("f0")).is_err(),
        "the old name is gone"
    );
    fs.forget(f0, 2);
    assert!(fs.getattr(f0).is_err());
}

#[test]
fn concurrent_lookups_forgets_and_copy_ups_lose_no_reference() {
    const FILES: usize = 40;
    const ROUNDS: usize = 200;
    let f = fixture(FILES);
    let fs = &f.fs;
    let d = lookup(fs, ROOT_INO, "d");
    // Each thread looks every file up and forgets it again; one also changes modes, which
    // turns counted entries into full inodes while the others hold references.
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for round in 0..ROUNDS {
                    for i in 0..FILES {
                        let name = format!("f{i}");
                        let ino = lookup(fs, d, &name);
                        if t == 0 && (round + i) % 7 == 0 {
                            chmod(fs, ino, 0o600 + (round % 2) as u32 * 0o40);
                        }
                        assert!(fs.getattr(ino).is_ok(), "held inode {ino} is gone");
                        fs.forget(ino, 1);
                    }
                }
            });
        }
    });
    assert_eq!(
        fs.inode_count(),
        2,
        "root and d: every reference was returned"
    );
    for i in 0..FILES {
        let ino = lookup(fs, d, &format!("f{i}"));
        assert_eq!(read_all(fs, ino), format!("data {i}").as_bytes());
        fs.forget(ino, 1);
    }
}

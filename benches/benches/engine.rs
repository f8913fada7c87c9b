//! Micro-benchmarks of the rfs engine without a mount, to guard against regressions:
//! lower-tree build and lookup, `UnionFs` lookup and merged readdir, tar index build, and
//! copy-up (data and metadata-only) through `UnionFs`.
//!
//! Plain `std::time` loops: each case runs a few rounds and prints the median and the best
//! time per operation. Run with `cargo bench -p rfs-benches --bench engine`; pass a word to
//! run only the cases whose name contains it. Fixtures go to a temporary directory (under
//! `$RFS_BENCH_TMP` if set); no root needed.

use std::ffi::OsStr;
use std::fs;
use std::hint::black_box;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rfs_fs::lower::{LayerInput, LowerTree};
use rfs_fs::tar_index::{self, Limits};
use rfs_fs::union::{Caller, ROOT_INO, SetAttr, UnionFs, UpperDirs, Writer};

/// Directories × files per directory of the synthetic lower tree.
const DIRS: usize = 100;
const FILES: usize = 200;

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let base = std::env::var_os("RFS_BENCH_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::tempdir_in(base).expect("temp dir");
    let layers = make_layers(tmp.path());
    let b = Bench { filter };
    println!(
        "{:<48} {:>8} {:>14} {:>14}",
        "case", "ops", "median/op", "best/op"
    );

    b.case("LowerTree::build, 2 dir layers, 20k files", 1, 5, || {
        black_box(LowerTree::build(dir_inputs(&layers)).expect("build"));
    });

    let tree = LowerTree::build(dir_inputs(&layers)).expect("build");
    let paths: Vec<Vec<u8>> = (0..DIRS)
        .flat_map(|d| (0..FILES).map(move |f| format!("d{d:03}/f{f:04}").into_bytes()))
        .collect();
    b.case("LowerTree::lookup_path", paths.len(), 10, || {
        for p in &paths {
            black_box(tree.lookup_path(p));
        }
    });

    let fs =
        UnionFs::new(LowerTree::build(dir_inputs(&layers)).expect("build"), None).expect("union");
    let names: Vec<(String, Vec<String>)> = (0..DIRS)
        .map(|d| {
            (
                format!("d{d:03}"),
                (0..FILES).map(|f| format!("f{f:04}")).collect(),
            )
        })
        .collect();
    b.case("UnionFs::lookup (read-only union)", DIRS * FILES, 5, || {
        for (d, files) in &names {
            let dir = fs.lookup(ROOT_INO, OsStr::new(d)).expect("dir").ino;
            for f in files {
                let _ = black_box(fs.lookup(dir, OsStr::new(f)));
            }
        }
    });
    b.case("UnionFs opendir+readdir, merged dirs", DIRS, 5, || {
        for (d, _) in &names {
            let dir = fs.lookup(ROOT_INO, OsStr::new(d)).expect("dir").ino;
            let fh = fs.opendir(dir).expect("opendir");
            black_box(fs.readdir(fh).expect("readdir").len());
            fs.release(fh);
        }
    });

    // With an (empty) upper: every lookup also consults the upper dir.
    let up = tmp.path().join("upper-lookup");
    let fsu = writable(&layers, &up);
    b.case(
        "UnionFs::lookup (with an empty upper)",
        DIRS * FILES,
        5,
        || {
            for (d, files) in &names {
                let dir = fsu.lookup(ROOT_INO, OsStr::new(d)).expect("dir").ino;
                for f in files {
                    let _ = black_box(fsu.lookup(dir, OsStr::new(f)));
                }
            }
        },
    );
    b.case(
        "UnionFs opendir+readdir (with an empty upper)",
        DIRS,
        5,
        || {
            for (d, _) in &names {
                let dir = fsu.lookup(ROOT_INO, OsStr::new(d)).expect("dir").ino;
                let fh = fsu.opendir(dir).expect("opendir");
                black_box(fsu.readdir(fh).expect("readdir").len());
                fsu.release(fh);
            }
        },
    );

    let tar = make_tar(50_000);
    b.case("tar_index::build, 50k members", 50_000, 5, || {
        black_box(tar_index::build(Cursor::new(&tar), &Limits::default()).expect("index"));
    });
    let index = tar_index::build(Cursor::new(&tar), &Limits::default()).expect("index");
    let encoded = tar_index::codec::encode(&index);
    b.case("tar_index::codec::decode, 50k members", 50_000, 5, || {
        black_box(tar_index::codec::decode(&encoded, &Limits::default()).expect("decode"));
    });
    let tar_path = tmp.path().join("layer.tar");
    fs::write(&tar_path, &tar).expect("write tar");
    b.case("LowerTree::build, 1 tar layer, 50k members", 1, 5, || {
        black_box(
            LowerTree::build(vec![LayerInput::Tar {
                file: tar_path.clone(),
                offset: 0,
                index: index.clone(),
            }])
            .expect("build"),
        );
    });

    let mut round = 0;
    let mut fresh = |what: &str| {
        round += 1;
        writable(&layers, &tmp.path().join(format!("upper-{what}-{round}")))
    };
    b.case_with(
        "copy-up of a 4 KiB lower file (open O_WRONLY)",
        200,
        5,
        || fresh("small"),
        |fs| {
            for d in 0..2 {
                let dir = fs
                    .lookup(ROOT_INO, OsStr::new(&format!("d{d:03}")))
                    .expect("dir")
                    .ino;
                for f in 0..100 {
                    let ino = fs
                        .lookup(dir, OsStr::new(&format!("f{f:04}")))
                        .expect("file")
                        .ino;
                    let fh = fs.open(ino, libc::O_WRONLY, Caller::ROOT).expect("open").fh;
                    fs.write(fh, 0, b"x", Writer::default()).expect("write");
                    fs.release(fh);
                }
            }
        },
    );
    b.case_with(
        "copy-up of a 64 MiB lower file (open O_WRONLY)",
        1,
        5,
        || fresh("big"),
        |fs| {
            let ino = fs.lookup(ROOT_INO, OsStr::new("big.bin")).expect("big").ino;
            let fh = fs
                .open(ino, libc::O_WRONLY | libc::O_APPEND, Caller::ROOT)
                .expect("open")
                .fh;
            fs.write(fh, 64 << 20, b"x", Writer::default())
                .expect("write");
            fs.release(fh);
        },
    );
    b.case_with(
        "chmod of a 64 MiB lower file (metadata copy-up)",
        1,
        5,
        || fresh("chmod"),
        |fs| {
            let ino = fs.lookup(ROOT_INO, OsStr::new("big.bin")).expect("big").ino;
            let set = SetAttr {
                mode: Some(0o600),
                ..SetAttr::default()
            };
            fs.setattr(ino, set, None, Caller::ROOT).expect("chmod");
        },
    );
    b.case_with(
        "create + write 4 KiB + release of a new file",
        200,
        5,
        || fresh("create"),
        |fs| {
            let caller = Caller::ROOT;
            let dir = fs
                .mkdir(ROOT_INO, OsStr::new("new"), 0o755, caller)
                .expect("mkdir")
                .ino;
            let data = [b'n'; 4096];
            for i in 0..200 {
                let (a, fh) = fs
                    .create(
                        dir,
                        OsStr::new(&format!("f{i}")),
                        0o644,
                        libc::O_WRONLY,
                        caller,
                    )
                    .expect("create");
                black_box(a);
                fs.write(fh, 0, &data, Writer::default()).expect("write");
                fs.release(fh);
            }
        },
    );
}

/// Runs and reports one case.
struct Bench {
    filter: Option<String>,
}

impl Bench {
    /// Runs `f` (`ops` operations per call) `rounds` times after one warm-up call.
    fn case(&self, name: &str, ops: usize, rounds: usize, mut f: impl FnMut()) {
        self.case_with(name, ops, rounds, || (), |()| f());
    }

    /// Like [`Bench::case`], with untimed `setup` making the state each call consumes.
    fn case_with<S>(
        &self,
        name: &str,
        ops: usize,
        rounds: usize,
        mut setup: impl FnMut() -> S,
        mut f: impl FnMut(S),
    ) {
        if self.filter.as_deref().is_some_and(|w| !name.contains(w)) {
            return;
        }
        f(setup());
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let s = setup();
                let t = Instant::now();
                f(s);
                t.elapsed()
            })
            .collect();
        times.sort();
        let per = |d: Duration| d.as_secs_f64() / ops as f64;
        println!(
            "{name:<48} {ops:>8} {:>14} {:>14}",
            show(per(times[times.len() / 2])),
            show(per(times[0]))
        );
    }
}

fn show(secs: f64) -> String {
    if secs < 1e-6 {
        format!("{:.0} ns", secs * 1e9)
    } else if secs < 1e-3 {
        format!("{:.2} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.3} s")
    }
}

/// Two directory layers, bottom first: `base` with DIRS × FILES files of 4 KiB and a
/// 64 MiB `big.bin`; `top` overriding every 7th file and whiting out every 11th
/// (`.wh.` files, so no root is needed).
fn make_layers(dir: &Path) -> Vec<PathBuf> {
    let base = dir.join("base");
    let top = dir.join("top");
    let data = vec![b'a'; 4096];
    for d in 0..DIRS {
        let bd = base.join(format!("d{d:03}"));
        let td = top.join(format!("d{d:03}"));
        fs::create_dir_all(&bd).expect("mkdir");
        fs::create_dir_all(&td).expect("mkdir");
        for f in 0..FILES {
            let name = format!("f{f:04}");
            fs::write(bd.join(&name), &data).expect("write");
            let i = d * FILES + f;
            if i % 7 == 3 {
                fs::write(td.join(&name), b"top\n").expect("write");
            } else if i % 11 == 5 && f >= 100 {
                fs::write(td.join(format!(".wh.{name}")), b"").expect("write");
            }
        }
    }
    let big = vec![7u8; 1 << 20];
    let mut data = Vec::with_capacity(64 << 20);
    for _ in 0..64 {
        data.extend_from_slice(&big);
    }
    fs::write(base.join("big.bin"), data).expect("write big");
    vec![base, top]
}

fn dir_inputs(layers: &[PathBuf]) -> Vec<LayerInput> {
    layers.iter().cloned().map(LayerInput::Dir).collect()
}

fn writable(layers: &[PathBuf], dir: &Path) -> UnionFs {
    let upper = dir.join("upper");
    let work = dir.join("work");
    fs::create_dir_all(&upper).expect("mkdir");
    fs::create_dir_all(&work).expect("mkdir");
    UnionFs::new(
        LowerTree::build(dir_inputs(layers)).expect("build"),
        Some(UpperDirs { upper, work }),
    )
    .expect("union")
}

/// An in-memory tar of `n` small files in directories of 500.
fn make_tar(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = [b'z'; 300];
    for i in 0..n {
        if i % 500 == 0 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("dir{:04}/", i / 500), std::io::empty())
                .expect("dir");
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(
            &mut h,
            format!("dir{:04}/file-{i:06}.txt", i / 500),
            &data[..],
        )
        .expect("file");
    }
    b.into_inner().expect("tar")
}

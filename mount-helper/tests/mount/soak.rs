//! Soak: 8 workers do random operations on one mount at once, then a model check.
//!
//! Each worker owns one directory that starts as a lower directory with files (so its work
//! copies up, whites out and renames lower entries) and keeps a model of what it must
//! contain. Every result must match the model as it goes; at the end the whole tree is
//! compared with the models and the daemon's RSS must not have grown beyond a bound.
//!
//! `RFS_SOAK_SECS` sets the duration (default 60 s, the CI version; the long soak is
//! `RFS_SOAK_SECS=600 cargo test -p rfs-mount-helper --test mount soak`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::common::{Daemon, Scratch};

const WORKERS: usize = 8;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One worker's run: returns its model (file name → contents) and operation count.
fn worker(
    dir: &Path,
    seed: u64,
    until: Instant,
    mut model: BTreeMap<String, Vec<u8>>,
) -> (BTreeMap<String, Vec<u8>>, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut ops = 0u64;
    let mut next_name = 0u32;
    while Instant::now() < until {
        ops += 1;
        let names: Vec<String> = model.keys().cloned().collect();
        let pick = |rng: &mut SmallRng| -> Option<String> {
            (!names.is_empty()).then(|| names[rng.random_range(0..names.len())].clone())
        };
        match rng.random_range(0..8u32) {
            0 => {
                let name = format!("n{seed}-{next_name}");
                next_name += 1;
                let data: Vec<u8> = (0..rng.random_range(0..5000))
                    .map(|_| rng.random())
                    .collect();
                std::fs::write(dir.join(&name), &data).unwrap();
                model.insert(name, data);
            }
            1 => {
                if let Some(n) = pick(&mut rng) {
                    let extra: Vec<u8> = (0..rng.random_range(1..3000))
                        .map(|_| rng.random())
                        .collect();
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(&n))
                        .unwrap();
                    f.write_all(&extra).unwrap();
                    model.get_mut(&n).unwrap().extend_from_slice(&extra);
                }
            }
            2 => {
                if let Some(n) = pick(&mut rng) {
                    let len = model[&n].len();
                    let to = if len == 0 {
                        0
                    } else {
                        rng.random_range(0..len)
                    };
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(dir.join(&n))
                        .unwrap();
                    f.set_len(to as u64).unwrap();
                    model.get_mut(&n).unwrap().truncate(to);
                }
            }
            3 => {
                if let Some(n) = pick(&mut rng) {
                    std::fs::remove_file(dir.join(&n)).unwrap();
                    model.remove(&n);
                }
            }
            4 => {
                if let Some(n) = pick(&mut rng) {
                    let to = format!("r{seed}-{next_name}");
                    next_name += 1;
                    std::fs::rename(dir.join(&n), dir.join(&to)).unwrap();
                    let v = model.remove(&n).unwrap();
                    model.insert(to, v);
                }
            }
            5 => {
                if let Some(n) = pick(&mut rng) {
                    let mode = 0o600 | rng.random_range(0..0o100u32);
                    std::fs::set_permissions(
                        dir.join(&n),
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )
                    .unwrap();
                }
            }
            _ => {
                if let Some(n) = pick(&mut rng) {
                    let got = std::fs::read(dir.join(&n)).unwrap();
                    assert!(
                        got == model[&n],
                        "worker {seed}: {n} differs from the model"
                    );
                }
            }
        }
    }
    (model, ops)
}

#[test]
fn soak_eight_workers_against_a_model() {
    let secs: u64 = std::env::var("RFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    let mut models = Vec::new();
    for w in 0..WORKERS {
        let d = lower.join(format!("w{w}"));
        std::fs::create_dir(&d).unwrap();
        let mut m = BTreeMap::new();
        for i in 0..40 {
            let data = format!("worker {w} lower file {i}\n")
                .repeat(i + 1)
                .into_bytes();
            std::fs::write(d.join(format!("l{i}")), &data).unwrap();
            m.insert(format!("l{i}"), data);
        }
        models.push(m);
    }
    let (upper, work, mnt) = (s.mkdir("upper"), s.mkdir("work"), s.mkdir("mnt"));
    let daemon = Daemon::start(&lower, &upper, &work, &mnt);
    let pid = daemon.child.id();
    // Warm up once so the starting RSS includes the steady-state caches.
    for w in 0..WORKERS {
        let _ = std::fs::read_dir(mnt.join(format!("w{w}")))
            .unwrap()
            .count();
    }
    let rss_start = rss_kib(pid);
    let until = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = models
        .into_iter()
        .enumerate()
        .map(|(w, m)| {
            let dir = mnt.join(format!("w{w}"));
            std::thread::spawn(move || worker(&dir, w as u64, until, m))
        })
        .collect();
    let mut total_ops = 0;
    let mut results = Vec::new();
    for h in handles {
        let (m, ops) = h.join().expect("a worker failed (see its panic above)");
        total_ops += ops;
        results.push(m);
    }
    for (w, m) in results.iter().enumerate() {
        let dir = mnt.join(format!("w{w}"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want: Vec<String> = m.keys().cloned().collect();
        assert_eq!(names, want, "worker {w}: directory listing");
        for (n, data) in m {
            assert!(
                std::fs::read(dir.join(n)).unwrap() == *data,
                "worker {w}: {n}"
            );
        }
    }
    let rss_end = rss_kib(pid);
    eprintln!(
        "soak: {WORKERS} workers, {secs} s, {total_ops} operations; daemon RSS {rss_start} KiB -> {rss_end} KiB"
    );
    assert!(
        rss_end < rss_start + 64 * 1024,
        "daemon RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    drop(daemon);
}

//! Warms the host's metadata caches for directory layers before they are indexed.
//!
//! Indexing a directory layer reads and stats every entry, one at a time; on a cold cache
//! each `fstatat` waits for the disk. A few threads walking the same trees ahead of the
//! indexer keep several reads in flight, so the indexer mostly finds the inodes cached.
//!
//! One thread starts alone and times its first few hundred entries: if they come from the
//! cache, the walk stops there (helpers would only compete with the indexer for the CPU);
//! otherwise it brings in helpers. The walk only reads (`getdents`, `fstatat`, `O_PATH`
//! directory fds, never following a symlink), discards what it learns, and stops as soon
//! as the indexer is done.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, unbounded};

use crate::sys;

/// Threads walking ahead of the indexer on a cold cache: enough to keep a virtual disk's
/// queue busy.
const WALKERS: usize = 6;

/// Entries the first walker times before deciding whether the cache is warm.
const SAMPLE: usize = 256;

/// Average time per entry under which the cache counts as warm: a cached `fstatat` takes
/// about a microsecond, one that reads the disk a hundred or more.
const WARM_NS_PER_ENTRY: u64 = 5_000;

/// What the walkers share.
#[derive(Debug)]
struct Walk {
    tx: Sender<OwnedFd>,
    rx: Receiver<OwnedFd>,
    stop: AtomicBool,
    /// Directories queued or being read: the walkers end when it drops to zero.
    pending: AtomicUsize,
    entries: AtomicUsize,
    helpers: Mutex<Vec<JoinHandle<()>>>,
}

/// A running prefetch; [`Prefetch::finish`] (or drop) stops and joins it.
#[derive(Debug)]
pub(crate) struct Prefetch {
    walk: Arc<Walk>,
    lead: Option<JoinHandle<()>>,
    /// Nanoseconds per entry the lead walker measured (0 until it decided).
    probe_ns: Arc<AtomicU64>,
}

impl Prefetch {
    /// Starts walking the directory trees `roots` (duplicates of the layers' root fds).
    pub(crate) fn start(roots: Vec<OwnedFd>) -> Prefetch {
        let (tx, rx) = unbounded::<OwnedFd>();
        let walk = Arc::new(Walk {
            tx,
            rx,
            stop: AtomicBool::new(false),
            pending: AtomicUsize::new(roots.len()),
            entries: AtomicUsize::new(0),
            helpers: Mutex::new(Vec::new()),
        });
        for r in roots {
            let _ = walk.tx.send(r);
        }
        let probe_ns = Arc::new(AtomicU64::new(0));
        let (w, p) = (Arc::clone(&walk), Arc::clone(&probe_ns));
        let lead = std::thread::Builder::new()
            .name("rfs-prefetch".into())
            .spawn(move || lead(&w, &p))
            .ok();
        Prefetch {
            walk,
            lead,
            probe_ns,
        }
    }

    /// Stops the walkers and waits for them.
    pub(crate) fn finish(mut self) {
        self.stop_and_join();
        log::debug!(
            "prefetch: {} entries; probe {} ns per entry",
            self.walk.entries.load(Ordering::Relaxed),
            self.probe_ns.load(Ordering::Relaxed)
        );
    }

    fn stop_and_join(&mut self) {
        self.walk.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.lead.take() {
            let _ = t.join();
        }
        let helpers = std::mem::take(
            &mut *self
                .walk
                .helpers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in helpers {
            let _ = t.join();
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The first walker: times the first entries alone, then stops (warm cache) or brings in
/// helpers and keeps walking (cold cache).
fn lead(walk: &Arc<Walk>, probe_ns: &AtomicU64) {
    let t = Instant::now();
    while walk.entries.load(Ordering::Relaxed) < SAMPLE && step(walk) {}
    let n = walk.entries.load(Ordering::Relaxed).max(1);
    let per_entry = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX) / n as u64;
    probe_ns.store(per_entry.max(1), Ordering::Relaxed);
    if per_entry <= WARM_NS_PER_ENTRY || walk.stop.load(Ordering::Relaxed) {
        return;
    }
    {
        let mut helpers = walk.helpers.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 1..WALKERS {
            let w = Arc::clone(walk);
            if let Ok(h) = std::thread::Builder::new()
                .name(format!("rfs-prefetch-{i}"))
                .spawn(move || while step(&w) {})
            {
                helpers.push(h);
            }
        }
    }
    while step(walk) {}
}

/// Reads one queued directory; false when the walk is over.
fn step(walk: &Walk) -> bool {
    if walk.stop.load(Ordering::Relaxed) || walk.pending.load(Ordering::Acquire) == 0 {
        return false;
    }
    if let Ok(dir) = walk.rx.recv_timeout(Duration::from_millis(5)) {
        let n = visit(dir.as_fd(), walk);
        walk.entries.fetch_add(n, Ordering::Relaxed);
        walk.pending.fetch_sub(1, Ordering::AcqRel);
    }
    true
}

/// Reads one directory, stats its entries and queues its subdirectories; returns how many
/// entries it saw.
fn visit(dir: BorrowedFd<'_>, walk: &Walk) -> usize {
    let Ok(listing) = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return 0;
    };
    let Ok(entries) = sys::read_dir(listing) else {
        return 0;
    };
    let n = entries.len();
    for (name, d_type, _) in entries {
        if walk.stop.load(Ordering::Relaxed) {
            break;
        }
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(c) = sys::cstr(&name) else { continue };
        if d_type == libc::DT_DIR {
            if let Ok(sub) = sys::openat(dir, &c, libc::O_PATH | libc::O_DIRECTORY, 0) {
                walk.pending.fetch_add(1, Ordering::AcqRel);
                if walk.tx.send(sub).is_err() {
                    walk.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        } else {
            let _ = sys::fstatat_opt(dir, &c);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_every_entry_of_a_small_tree_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut total = 0;
        for a in 0..5 {
            let d = dir.path().join(format!("d{a}"));
            std::fs::create_dir(&d).unwrap();
            total += 1;
            for b in 0..10 {
                std::fs::write(d.join(format!("f{b}")), b"x").unwrap();
                total += 1;
            }
        }
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        total += 1;
        let root: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let p = Prefetch::start(vec![root]);
        let t = Instant::now();
        while p.walk.pending.load(Ordering::Acquire) > 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "walk did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.walk.entries.load(Ordering::Relaxed), total);
        p.finish();
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 6,
            "the walk only reads"
        );
    }
}
